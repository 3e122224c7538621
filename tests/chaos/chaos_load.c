/* cms-chaos: the command load and the helpers of tests/chaos.
 *
 *   cms-chaos load --admin-key-file F --record FILE --stop-file F ...
 *   cms-chaos expect --in F.pbs --bad-fraction X --out FILE
 *   cms-chaos dlq --out FILE            (with the migrator's NATS credentials)
 *
 * load: a stream of commands of every service, each with a Cms-Request-Id
 * of its own, while tests/chaos breaks things: an identity client (create
 * an identity, issue it an API key, suspend it, activate it again),
 * --contract-clients contract clients (create, submit, the provider's and
 * the consumer's signatures, activate, between a pair of their own) and a
 * training client (jobs under a contract whose terms carry
 * privacy.max_epsilon, for the worker tests/chaos runs; a new contract once
 * the ledger refuses a job). A command without a definite answer (no
 * reply, no responders, UNAVAILABLE or INTERNAL) is sent again with the SAME
 * request id and body, after a jittered backoff, until it gets one or
 * --retry-until has passed since its first attempt (then it is recorded
 * UNANSWERED). Every command's outcome is one line of --record, tab
 * separated:
 *
 *     C client service verb request_id attempts outcome result_id key
 *
 * outcome: OK, an error code's name, IN_DOUBT (FAILED_PRECONDITION on the
 * Cms-Request-Id field: an earlier attempt committed and stopped before its
 * reply was kept) or UNANSWERED; result_id: what the command made or
 * changed ("-" if nothing); key: what it is known by in the database (an
 * identity's name, a contract's title, a job's model_name, or the id it
 * acted on, with the target status for set_status). Once the stop file
 * exists each client ends its cycle; then every command with a definite
 * outcome is sent once more, same request id and body, and must get the
 * same outcome and result (a line "R request_id outcome result_id
 * first_outcome first_result" for each one that does not). Prints "key:
 * value" totals; exit status 1 if a command stayed unanswered or a repeat
 * differed.
 *
 * expect: the events of a .pbs file that cmsctl gen wrote with
 * --bad-fraction X, one line each: "<sha256 of the record> <event_id or ->
 * <kind>", kind "valid" or the poison kind the audit service reports
 * (gen's rule: entry i is poison when floor((i+1) X) > floor(i X), the
 * kinds in gen's fixed order).
 *
 * split: the records of a .pbs file by the NATS user that may publish them
 * as cmsctl replay sends them (cms.events.<event_type>, or cms.events.unknown.*
 * for an undecodable record or a type that is no subject): the services'
 * users their own resource types, "publisher" the rest (deploy/nats/gen-conf
 * lets nobody else publish events); into <out>.<user>.pbs, counts on stdout.
 *
 * dlq: every message of CMS_DLQ on cms.dlq.audit, one line each: "<sha256 of
 * its body> <Cms-Dlq-Reason> <stream sequence>", through an ordered
 * consumer of its own.
 *
 * A test tool, not a service: it blocks, sleeps and uses threads freely. */
#include "apikey.h"
#include "backoff.h"
#include "benchlib.h"
#include "bus.h"
#include "cmd.h"
#include "config.h"
#include "log.h"
#include "natsauth.h"
#include "pbs.h"
#include "uuid.h"

#include "cms/v1/command.pb-c.h"
#include "cms/v1/contracts.pb-c.h"
#include "cms/v1/envelope.pb-c.h"
#include "cms/v1/identity.pb-c.h"
#include "cms/v1/training.pb-c.h"

#include <errno.h>
#include <inttypes.h>
#include <nats/nats.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PROG "cms-chaos"

enum {
    EXIT_DONE = BENCH_EXIT_DONE,
    EXIT_FAILED = BENCH_EXIT_FAILED,
    EXIT_USAGE = BENCH_EXIT_USAGE
};

static const cms_option options[] = {
    {"nats-url", "CMS_NATS_URL", CMS_OPT_STRING, "nats://127.0.0.1:4222", "NATS server URL",
     CMS_OPT_PUBLIC, false},
    CMS_OPTIONS_NATS_SECURITY("", ""),
    {"prefix", NULL, CMS_OPT_STRING, "cms.cmd", "load: command subject root", CMS_OPT_PUBLIC,
     false},
    {"admin-key-file", NULL, CMS_OPT_STRING, NULL, "load: file holding the admin API key",
     CMS_OPT_PUBLIC, false},
    {"record", NULL, CMS_OPT_STRING, NULL, "load: where every command's outcome goes",
     CMS_OPT_PUBLIC, false},
    {"stop-file", NULL, CMS_OPT_STRING, NULL,
     "load: the clients end their cycle once this file exists", CMS_OPT_PUBLIC, false},
    {"retry-until", NULL, CMS_OPT_DURATION, "180s",
     "load: a command without a definite answer is sent again (same request id and body) "
     "until this long after its first attempt",
     CMS_OPT_PUBLIC, false},
    {"timeout", NULL, CMS_OPT_DURATION, "3s", "load: wait for one attempt's reply", CMS_OPT_PUBLIC,
     false},
    {"contract-clients", NULL, CMS_OPT_INT, "2", "load: contract lifecycles under way at once",
     CMS_OPT_PUBLIC, false},
    {"pace", NULL, CMS_OPT_DURATION, "20ms", "load: pause of each client between its commands",
     CMS_OPT_PUBLIC, false},
    {"job-budget", NULL, CMS_OPT_STRING, "0.5", "load: privacy_budget (epsilon) of each job",
     CMS_OPT_PUBLIC, false},
    {"max-epsilon", NULL, CMS_OPT_STRING, "3", "load: privacy.max_epsilon of a training contract",
     CMS_OPT_PUBLIC, false},
    {"jobs-open", NULL, CMS_OPT_INT, "3", "load: most jobs submitted and not yet ended",
     CMS_OPT_PUBLIC, false},
    {"run-id", NULL, CMS_OPT_STRING, NULL,
     "load: names, titles and request ids start with it (default chaos-<pid>-<time>)",
     CMS_OPT_PUBLIC, false},
    {"in", NULL, CMS_OPT_STRING, NULL, "expect, split: the .pbs file", CMS_OPT_PUBLIC, false},
    {"bad-fraction", NULL, CMS_OPT_STRING, "0", "expect: the --bad-fraction it was made with",
     CMS_OPT_PUBLIC, false},
    {"out", NULL, CMS_OPT_STRING, NULL, "expect, dlq: where the lines go; split: the files' prefix",
     CMS_OPT_PUBLIC, false},
    {"wait", NULL, CMS_OPT_DURATION, "10s", "dlq: longest wait for NATS and each message",
     CMS_OPT_PUBLIC, false},
};

static const char usage_tail[] =
    "VERB\n"
    "\n"
    "verbs:\n"
    "  load     commands of every service, each retried with its request id until answered,\n"
    "           every outcome into --record, until --stop-file exists; then each once more\n"
    "  expect   the valid and poison events of a .pbs file of cmsctl gen, one a line\n"
    "  split    a .pbs file as the NATS users that may publish it: <out>.<user>.pbs for\n"
    "           identity, contracts, training and publisher\n"
    "  dlq      the dead letters of cms.dlq.audit (sha256, reason, sequence), one a line\n"
    "\n"
    "Exit status: 0 done (load: every command answered, every repeat the same), 1 failed,\n"
    "2 usage error.";

/* --- NATS ---------------------------------------------------------------------- */

/* A nats.c connection as the credentials say (the user's inbox prefix),
 * reconnecting for ever: the servers come and go under chaos. */
static bool connect_nats(const cms_config *cfg, natsConnection **nc)
{
    natsOptions *no = NULL;
    char why[512] = "";
    const char *url = cms_config_str(cfg, "nats-url");
    cms_nats_security sec = {
        .creds_file = cms_config_str(cfg, "nats-creds"),
        .inbox_prefix = cms_config_str(cfg, "nats-inbox-prefix"),
        .ca_file = cms_config_str(cfg, "nats-ca"),
        .cert_file = cms_config_str(cfg, "nats-cert"),
        .key_file = cms_config_str(cfg, "nats-key"),
        .tls = cms_config_bool(cfg, "nats-tls"),
    };
    bool ok = false;
    natsStatus st = natsOptions_Create(&no);
    if (st == NATS_OK)
        st = natsOptions_SetName(no, PROG);
    if (st == NATS_OK)
        st = natsOptions_SetMaxReconnect(no, -1);
    if (st == NATS_OK)
        st = natsOptions_SetReconnectWait(no, 200);
    if (st == NATS_OK)
        st = natsOptions_SetRetryOnFailedConnect(no, true, NULL, NULL);
    if (st != NATS_OK) {
        fprintf(stderr, PROG ": NATS options: %s\n", natsStatus_GetText(st));
        goto out;
    }
    if (cms_natsauth_apply(no, url, &sec, NULL, why, sizeof why) != CMS_NATSAUTH_OK) {
        fprintf(stderr, PROG ": %s\n", why);
        goto out;
    }
    st = natsConnection_Connect(nc, no);
    if (st != NATS_OK && st != NATS_NOT_YET_CONNECTED) {
        fprintf(stderr, PROG ": connecting to %s: %s\n", url, natsStatus_GetText(st));
        goto out;
    }
    ok = true;
out:
    natsOptions_Destroy(no);
    return ok;
}

/* --- load: commands and their outcomes ----------------------------------------- */

typedef enum { OUT_OK, OUT_ERROR, OUT_IN_DOUBT, OUT_UNANSWERED } out_kind;

/* One command: where it goes, as whom, its request id and body (kept for
 * the repeat at the end), and what it came to. */
typedef struct command {
    char subject[96];
    char auth[CMS_APIKEY_LEN + 16];
    char rid[96];
    char key[128];
    bench_body body;
    const ProtobufCMessageDescriptor *rdesc;
    const char *service, *verb;
    out_kind kind;
    int code; /* the error code when kind is OUT_ERROR */
    int attempts;
    char result[CMS_UUID_STRLEN + 1];
} command;

typedef struct load load;

/* A client: one thread, one command at a time; cmds: the ones it sent. */
typedef struct client {
    load *l;
    int index;
    const char *name; /* identity, contracts, training */
    pthread_t thread;
    bool started;
    uint64_t n; /* commands so far: request ids and names */
    command *cmds;
    size_t ncmds, cap;
    bool failed; /* set-up failed or out of memory */
} client;

struct load {
    const cms_config *cfg;
    natsConnection *nc;
    const char *prefix, *run_id, *stop_file;
    char admin_auth[CMS_APIKEY_LEN + 16];
    int64_t timeout_ms, retry_ms, pace_ms;
    double job_budget, max_epsilon;
    int64_t jobs_open;
    FILE *rec;
    pthread_mutex_t rec_mu;
    _Atomic uint64_t sent, ok, errors, in_doubt, unanswered, attempts;
};

static bool stopping(const load *l)
{
    return access(l->stop_file, F_OK) == 0;
}

static void sleep_ms(int64_t ms)
{
    if (ms > 0)
        bench_sleep_until_ns(bench_mono_ns() + ms * 1000000);
}

static const char *outcome_text(const command *c)
{
    switch (c->kind) {
    case OUT_OK:
        return "OK";
    case OUT_IN_DOUBT:
        return "IN_DOUBT";
    case OUT_UNANSWERED:
        return "UNANSWERED";
    case OUT_ERROR:
        break;
    }
    return cms_cmd_code_name((cms_cmd_code)c->code);
}

static void record(client *cl, const command *c)
{
    load *l = cl->l;
    pthread_mutex_lock(&l->rec_mu);
    fprintf(l->rec, "C\t%s-%d\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", cl->name, cl->index, c->service,
            c->verb, c->rid, c->attempts, outcome_text(c), c->result[0] ? c->result : "-",
            c->key[0] ? c->key : "-");
    fflush(l->rec);
    pthread_mutex_unlock(&l->rec_mu);
}

/* The id a result carries, by its type. */
static void result_id(const ProtobufCMessage *m, char out[CMS_UUID_STRLEN + 1])
{
    const char *id = "";
    if (m->descriptor == &cms__v1__identity__descriptor)
        id = ((const Cms__V1__Identity *)m)->id;
    else if (m->descriptor == &cms__v1__credential__descriptor)
        id = ((const Cms__V1__Credential *)m)->id;
    else if (m->descriptor == &cms__v1__contract__descriptor)
        id = ((const Cms__V1__Contract *)m)->id;
    else if (m->descriptor == &cms__v1__training_job__descriptor)
        id = ((const Cms__V1__TrainingJob *)m)->id;
    snprintf(out, CMS_UUID_STRLEN + 1, "%s", id);
}

/* One attempt: true when the answer is definite (kind, code, result set;
 * *out the result on OK unless out is NULL). */
static bool attempt(load *l, command *c, ProtobufCMessage **out)
{
    ProtobufCMessage *res = NULL;
    char field[64];
    int code = bench_command_packed(PROG, l->nc, c->subject, c->auth, c->rid, &c->body, c->rdesc,
                                    l->timeout_ms, true, &res, field, sizeof field);
    atomic_fetch_add(&l->attempts, 1);
    c->result[0] = '\0';
    if (code == 0) {
        c->kind = OUT_OK;
        c->code = 0;
        result_id(res, c->result);
        if (out)
            *out = res;
        else
            protobuf_c_message_free_unpacked(res, NULL);
        return true;
    }
    if (code == BENCH_NO_REPLY || code == BENCH_BAD_REPLY ||
        code == CMS__V1__ERROR_CODE__UNAVAILABLE || code == CMS__V1__ERROR_CODE__INTERNAL)
        return false;
    c->code = code;
    c->kind = code == CMS__V1__ERROR_CODE__FAILED_PRECONDITION &&
                      strcmp(field, CMS_CMD_REQUEST_ID_HEADER) == 0
                  ? OUT_IN_DOUBT
                  : OUT_ERROR;
    return true;
}

/* Sends c until it has a definite answer or retry-until passed. */
static void send_until_answered(load *l, command *c, ProtobufCMessage **out)
{
    int64_t t0 = bench_mono_ns();
    cms_backoff bo;
    cms_backoff_init(&bo, 100, 2000);
    c->attempts = 0;
    for (;;) {
        c->attempts++;
        if (attempt(l, c, out))
            return;
        if (bench_mono_ns() - t0 > l->retry_ms * 1000000) {
            c->kind = OUT_UNANSWERED;
            return;
        }
        sleep_ms((int64_t)cms_backoff_next(&bo));
    }
}

/* Makes, sends and records a command of m; 0 with *out (if not NULL) on
 * OK, else the error code, 1000 in doubt, -1 unanswered or no memory. */
static int run(client *cl, const char *service, const char *verb, const char *auth,
               const ProtobufCMessage *m, const ProtobufCMessageDescriptor *rdesc, const char *key,
               ProtobufCMessage **out)
{
    load *l = cl->l;
    if (cl->ncmds == cl->cap) {
        size_t cap = cl->cap ? 2 * cl->cap : 256;
        command *v = realloc(cl->cmds, cap * sizeof *v);
        if (v == NULL) {
            cl->failed = true;
            return -1;
        }
        cl->cmds = v;
        cl->cap = cap;
    }
    command *c = &cl->cmds[cl->ncmds];
    memset(c, 0, sizeof *c);
    if (!bench_pack_body(m, &c->body)) {
        cl->failed = true;
        return -1;
    }
    cl->ncmds++;
    snprintf(c->subject, sizeof c->subject, "%s.%s.%s", l->prefix, service, verb);
    snprintf(c->auth, sizeof c->auth, "%s", auth);
    snprintf(c->rid, sizeof c->rid, "%s-%s%d-%" PRIu64, l->run_id, cl->name, cl->index, ++cl->n);
    snprintf(c->key, sizeof c->key, "%s", key ? key : "");
    c->service = service;
    c->verb = verb;
    c->rdesc = rdesc;
    if (out)
        *out = NULL;
    atomic_fetch_add(&l->sent, 1);
    send_until_answered(l, c, out);
    record(cl, c);
    switch (c->kind) {
    case OUT_OK:
        atomic_fetch_add(&l->ok, 1);
        return 0;
    case OUT_ERROR:
        atomic_fetch_add(&l->errors, 1);
        return c->code;
    case OUT_IN_DOUBT:
        atomic_fetch_add(&l->in_doubt, 1);
        return 1000;
    case OUT_UNANSWERED:
        break;
    }
    atomic_fetch_add(&l->unanswered, 1);
    return -1;
}

static void bearer(const bench_party *p, char *out, size_t cap)
{
    snprintf(out, cap, "Bearer %s", p->api_key);
}

/* --- load: the clients ---------------------------------------------------------- */

/* A party made before the chaos, with its set-up commands retried too (but
 * not recorded: they are not under test). */
static bool make_party(client *cl, const char *role, bench_party *p)
{
    load *l = cl->l;
    char name[160];
    snprintf(name, sizeof name, "%s-%s%d-%s", l->run_id, cl->name, cl->index, role);
    for (int i = 0; i < 30 && !stopping(l); i++) {
        if (bench_party_create(PROG, l->nc, l->prefix, l->admin_auth, name, "user", true,
                               l->timeout_ms, p) == 0)
            return true;
        /* a retry after a lost reply finds the name taken: another name */
        snprintf(name, sizeof name, "%s-%s%d-%s-%d", l->run_id, cl->name, cl->index, role, i);
        sleep_ms(500);
    }
    fprintf(stderr, PROG ": %s-%d: cannot make its %s\n", cl->name, cl->index, role);
    return false;
}

static void *identity_client(void *arg)
{
    client *cl = arg;
    load *l = cl->l;
    char name[160], key[200];
    while (!stopping(l) && !cl->failed) {
        Cms__V1__Identity *ident = NULL;
        snprintf(name, sizeof name, "%s-id-%" PRIu64, l->run_id, cl->n + 1);
        Cms__V1__CreateIdentity ci = CMS__V1__CREATE_IDENTITY__INIT;
        ci.name = name;
        ci.type = (char *)"machine";
        ci.metadata_json = (char *)"{}";
        if (run(cl, "identity", "create", l->admin_auth, &ci.base, &cms__v1__identity__descriptor,
                name, (ProtobufCMessage **)&ident) != 0) {
            sleep_ms(l->pace_ms);
            continue;
        }
        char id[CMS_UUID_STRLEN + 1];
        snprintf(id, sizeof id, "%s", ident->id);
        cms__v1__identity__free_unpacked(ident, NULL);
        sleep_ms(l->pace_ms);

        Cms__V1__IssueCredential ic = CMS__V1__ISSUE_CREDENTIAL__INIT;
        ic.identity_id = id;
        ic.type = (char *)"api_key";
        ic.expires_at_us = bench_unix_us() + 7LL * 86400 * 1000000;
        ic.public_key = (char *)"";
        (void)run(cl, "identity", "issue_credential", l->admin_auth, &ic.base,
                  &cms__v1__credential__descriptor, id, NULL);
        sleep_ms(l->pace_ms);

        static const char *const moves[] = {"suspended", "active"};
        for (int k = 0; k < 2; k++) {
            Cms__V1__SetIdentityStatus ss = CMS__V1__SET_IDENTITY_STATUS__INIT;
            ss.id = id;
            ss.status = (char *)moves[k];
            ss.reason = (char *)"chaos";
            snprintf(key, sizeof key, "%s/%s", id, moves[k]);
            (void)run(cl, "identity", "set_status", l->admin_auth, &ss.base,
                      &cms__v1__identity__descriptor, key, NULL);
            sleep_ms(l->pace_ms);
        }
    }
    return NULL;
}

/* Creates a contract between prov and cons and takes it to active; its id
 * into id. terms: its terms JSON. True when it is active. */
static bool contract_lifecycle(client *cl, const bench_party *prov, const bench_party *cons,
                               const char *terms, char id[CMS_UUID_STRLEN + 1])
{
    load *l = cl->l;
    char pa[CMS_APIKEY_LEN + 16], ca[CMS_APIKEY_LEN + 16], title[200], hash[65], sig[BENCH_SIG_MAX];
    bool ok = false;
    bearer(prov, pa, sizeof pa);
    bearer(cons, ca, sizeof ca);
    snprintf(title, sizeof title, "%s-%s%d-contract-%" PRIu64, l->run_id, cl->name, cl->index,
             cl->n + 1);
    Cms__V1__Contract *k = NULL;
    Cms__V1__CreateContract cc = CMS__V1__CREATE_CONTRACT__INIT;
    cc.title = title;
    cc.description = (char *)"A contract of the chaos test.";
    cc.provider_id = (char *)prov->id;
    cc.consumer_id = (char *)cons->id;
    cc.terms_json = (char *)terms;
    cc.metadata_json = (char *)"";
    if (run(cl, "contracts", "create", pa, &cc.base, &cms__v1__contract__descriptor, title,
            (ProtobufCMessage **)&k) != 0)
        goto out;
    snprintf(id, CMS_UUID_STRLEN + 1, "%s", k->id);
    snprintf(hash, sizeof hash, "%s", k->content_hash);
    cms__v1__contract__free_unpacked(k, NULL);
    sleep_ms(l->pace_ms);

    Cms__V1__ContractRef ref = CMS__V1__CONTRACT_REF__INIT;
    ref.id = id;
    if (run(cl, "contracts", "submit", pa, &ref.base, &cms__v1__contract__descriptor, id, NULL) !=
        0)
        goto out;
    sleep_ms(l->pace_ms);
    const bench_party *who[2] = {prov, cons};
    const char *auth[2] = {pa, ca};
    for (int s = 0; s < 2; s++) {
        char key[120];
        if (!bench_sign_hash(who[s], hash, sig))
            goto out;
        Cms__V1__SignContract sc = CMS__V1__SIGN_CONTRACT__INIT;
        sc.id = id;
        sc.signature = sig;
        sc.key_id = (char *)who[s]->key_id;
        snprintf(key, sizeof key, "%s/%s", id, s == 0 ? "provider" : "consumer");
        if (run(cl, "contracts", "sign", auth[s], &sc.base, &cms__v1__contract__descriptor, key,
                NULL) != 0)
            goto out;
        sleep_ms(l->pace_ms);
    }
    /* the service's timer may activate a signed contract first: refused then */
    int code =
        run(cl, "contracts", "activate", pa, &ref.base, &cms__v1__contract__descriptor, id, NULL);
    ok = code == 0 || code == CMS__V1__ERROR_CODE__FAILED_PRECONDITION;
    sleep_ms(l->pace_ms);
out:
    sodium_memzero(pa, sizeof pa);
    sodium_memzero(ca, sizeof ca);
    return ok;
}

static void *contract_client(void *arg)
{
    client *cl = arg;
    load *l = cl->l;
    bench_party p[2];
    char terms[512], id[CMS_UUID_STRLEN + 1];
    memset(p, 0, sizeof p);
    if (!make_party(cl, "provider", &p[0]) || !make_party(cl, "consumer", &p[1])) {
        cl->failed = true;
        goto out;
    }
    bench_contract_terms(terms, sizeof terms, NULL);
    while (!stopping(l) && !cl->failed)
        if (!contract_lifecycle(cl, &p[0], &p[1], terms, id))
            sleep_ms(l->pace_ms); /* a party not yet known to cms-contracts, ... */
out:
    sodium_memzero(p, sizeof p);
    return NULL;
}

/* What cms-training says of the contract's ledger (not recorded: a read):
 * 0 with its open jobs, whether it knows the contract active, and the
 * epsilon left; else the error code or -1. */
static int ledger(client *cl, const char *auth, const char *contract, int *open, bool *active,
                  double *remaining)
{
    load *l = cl->l;
    Cms__V1__ContractBudgetRef ref = CMS__V1__CONTRACT_BUDGET_REF__INIT;
    ref.contract_id = (char *)contract;
    Cms__V1__ContractBudget *b = NULL;
    int code = bench_command(PROG, l->nc, l->prefix, "training", "budget", auth, &ref.base,
                             &cms__v1__contract_budget__descriptor, l->timeout_ms, true,
                             (ProtobufCMessage **)&b);
    if (code == 0) {
        *open = b->open_jobs;
        *active = strcmp(b->contract_status, "active") == 0;
        *remaining = b->remaining_epsilon;
        cms__v1__contract_budget__free_unpacked(b, NULL);
    }
    return code;
}

static void *training_client(void *arg)
{
    client *cl = arg;
    load *l = cl->l;
    bench_party p[2];
    char terms[512], extra[128], contract[CMS_UUID_STRLEN + 1] = "", model[200], config[600],
                                                            auth[CMS_APIKEY_LEN + 16];
    int64_t since = 0; /* when the contract became active for us */
    memset(p, 0, sizeof p);
    if (!make_party(cl, "provider", &p[0]) || !make_party(cl, "consumer", &p[1])) {
        cl->failed = true;
        goto out;
    }
    bearer(&p[1], auth, sizeof auth);
    snprintf(extra, sizeof extra, "\"privacy\":{\"max_epsilon\":%.17g,\"delta\":1e-5}",
             l->max_epsilon);
    bench_contract_terms(terms, sizeof terms, extra);
    snprintf(config, sizeof config,
             "{\"model\":{\"architecture\":\"logistic_regression\"},"
             "\"privacy\":{\"epsilon\":%.17g,\"delta\":1e-5,\"noise_mechanism\":\"gaussian\"},"
             "\"training\":{\"dataset\":\"synthetic\",\"dataset_size\":2000,\"batch_size\":100,"
             "\"epochs\":2,\"learning_rate\":0.5,\"max_grad_norm\":1.0}}",
             l->job_budget);
    while (!stopping(l) && !cl->failed) {
        if (contract[0] == '\0') {
            if (!contract_lifecycle(cl, &p[0], &p[1], terms, contract)) {
                contract[0] = '\0';
                sleep_ms(l->pace_ms);
                continue;
            }
            since = bench_mono_ns();
        }
        int open = 0;
        bool active = false;
        double remaining = 0;
        int code = ledger(cl, auth, contract, &open, &active, &remaining);
        if (code != 0 || !active || open >= l->jobs_open) {
            /* cms-training has not heard of the contract yet, or is away */
            if (!active && bench_mono_ns() - since > 120 * INT64_C(1000000000))
                contract[0] = '\0';
            sleep_ms(200);
            continue;
        }
        snprintf(model, sizeof model, "%s-%s%d-job-%" PRIu64, l->run_id, cl->name, cl->index,
                 cl->n + 1);
        Cms__V1__SubmitJob sj = CMS__V1__SUBMIT_JOB__INIT;
        sj.model_name = model;
        sj.contract_id = contract;
        sj.config_json = config;
        sj.privacy_budget = l->job_budget;
        code = run(cl, "training", "submit", auth, &sj.base, &cms__v1__training_job__descriptor,
                   model, NULL);
        /* the ledger is spent: another contract */
        if (code == CMS__V1__ERROR_CODE__FAILED_PRECONDITION && remaining < 2 * l->job_budget)
            contract[0] = '\0';
        sleep_ms(code == 0 ? l->pace_ms : 200);
    }
out:
    sodium_memzero(auth, sizeof auth);
    sodium_memzero(p, sizeof p);
    return NULL;
}

/* Every command with a definite outcome, once more: the same outcome and
 * result, or a line R. Returns the number that differed. */
static uint64_t repeat_all(client *cl, uint64_t *repeated)
{
    load *l = cl->l;
    uint64_t differed = 0;
    for (size_t i = 0; i < cl->ncmds; i++) {
        command *c = &cl->cmds[i];
        if (c->kind == OUT_UNANSWERED)
            continue;
        command again = *c;
        send_until_answered(l, &again, NULL);
        (*repeated)++;
        bool same =
            again.kind == c->kind && again.code == c->code && strcmp(again.result, c->result) == 0;
        if (same)
            continue;
        differed++;
        pthread_mutex_lock(&l->rec_mu);
        fprintf(l->rec, "R\t%s\t%s\t%s\t%s\t%s\n", c->rid, outcome_text(&again),
                again.result[0] ? again.result : "-", outcome_text(c),
                c->result[0] ? c->result : "-");
        fflush(l->rec);
        pthread_mutex_unlock(&l->rec_mu);
    }
    return differed;
}

static void client_free(client *cl)
{
    for (size_t i = 0; i < cl->ncmds; i++) {
        free(cl->cmds[i].body.data);
        sodium_memzero(cl->cmds[i].auth, sizeof cl->cmds[i].auth);
    }
    free(cl->cmds);
}

static int cmd_load(const cms_config *cfg)
{
    int status = EXIT_FAILED;
    load l = {.cfg = cfg};
    client *cls = NULL;
    int ncls = 0;
    char key[CMS_APIKEY_LEN + 1], default_id[64];
    const char *admin_file = cms_config_str(cfg, "admin-key-file");
    const char *rec_path = cms_config_str(cfg, "record");
    l.stop_file = cms_config_str(cfg, "stop-file");
    int64_t ncontract = cms_config_int(cfg, "contract-clients");
    pthread_mutex_init(&l.rec_mu, NULL);
    if (admin_file == NULL || rec_path == NULL || l.stop_file == NULL || ncontract < 0 ||
        ncontract > 64) {
        fprintf(stderr, PROG ": load needs --admin-key-file, --record, --stop-file, and "
                             "--contract-clients 0..64\n");
        status = EXIT_USAGE;
        goto out;
    }
    char *end;
    l.job_budget = strtod(cms_config_str(cfg, "job-budget"), &end);
    bool bad = *end != '\0' || !(l.job_budget > 0);
    l.max_epsilon = strtod(cms_config_str(cfg, "max-epsilon"), &end);
    if (bad || *end != '\0' || !(l.max_epsilon > 0)) {
        fprintf(stderr, PROG ": --job-budget and --max-epsilon want positive numbers\n");
        status = EXIT_USAGE;
        goto out;
    }
    l.prefix = cms_config_str(cfg, "prefix");
    snprintf(default_id, sizeof default_id, "chaos-%d-%" PRId64, (int)getpid(),
             bench_unix_us() / 1000000);
    l.run_id = cms_config_str(cfg, "run-id") ? cms_config_str(cfg, "run-id") : default_id;
    l.timeout_ms = cms_config_duration_ms(cfg, "timeout");
    l.retry_ms = cms_config_duration_ms(cfg, "retry-until");
    l.pace_ms = cms_config_duration_ms(cfg, "pace");
    l.jobs_open = cms_config_int(cfg, "jobs-open");
    if (!bench_read_key_file(PROG, admin_file, key))
        goto out;
    snprintf(l.admin_auth, sizeof l.admin_auth, "Bearer %s", key);
    l.rec = fopen(rec_path, "w");
    if (l.rec == NULL) {
        fprintf(stderr, PROG ": %s: %s\n", rec_path, strerror(errno));
        goto out;
    }
    if (!connect_nats(cfg, &l.nc))
        goto out;

    ncls = 2 + (int)ncontract;
    cls = calloc((size_t)ncls, sizeof *cls);
    if (cls == NULL)
        goto out;
    for (int i = 0; i < ncls; i++) {
        client *cl = &cls[i];
        cl->l = &l;
        cl->index = i == 0 ? 0 : i == 1 ? 0 : i - 2;
        cl->name = i == 0 ? "identity" : i == 1 ? "training" : "contracts";
        void *(*fn)(void *) = i == 0 ? identity_client : i == 1 ? training_client : contract_client;
        if (pthread_create(&cl->thread, NULL, fn, cl) != 0) {
            fprintf(stderr, PROG ": cannot start a thread\n");
            goto out;
        }
        cl->started = true;
    }
    fprintf(stderr, PROG ": load running (%d clients) until %s exists\n", ncls, l.stop_file);
    for (int i = 0; i < ncls; i++) {
        pthread_join(cls[i].thread, NULL);
        cls[i].started = false;
    }
    fprintf(stderr, PROG ": load stopped; repeating every answered command\n");
    uint64_t repeated = 0, differed = 0;
    bool failed = false;
    for (int i = 0; i < ncls; i++) {
        differed += repeat_all(&cls[i], &repeated);
        failed = failed || cls[i].failed;
    }
    printf("sent: %" PRIu64 "\n", atomic_load(&l.sent));
    printf("attempts: %" PRIu64 "\n", atomic_load(&l.attempts));
    printf("ok: %" PRIu64 "\n", atomic_load(&l.ok));
    printf("refused: %" PRIu64 "\n", atomic_load(&l.errors));
    printf("in_doubt: %" PRIu64 "\n", atomic_load(&l.in_doubt));
    printf("unanswered: %" PRIu64 "\n", atomic_load(&l.unanswered));
    printf("repeated: %" PRIu64 "\n", repeated);
    printf("repeat_differed: %" PRIu64 "\n", differed);
    if (failed)
        printf("failed: a client could not set up or ran out of memory\n");
    status = !failed && atomic_load(&l.unanswered) == 0 && differed == 0 && atomic_load(&l.ok) > 0
                 ? EXIT_DONE
                 : EXIT_FAILED;
out:
    if (cls) {
        for (int i = 0; i < ncls; i++)
            if (cls[i].started)
                pthread_join(cls[i].thread, NULL);
        for (int i = 0; i < ncls; i++)
            client_free(&cls[i]);
    }
    free(cls);
    if (l.rec)
        fclose(l.rec);
    natsConnection_Destroy(l.nc);
    (void)nats_CloseAndWait(5000);
    pthread_mutex_destroy(&l.rec_mu);
    sodium_memzero(key, sizeof key);
    sodium_memzero(l.admin_auth, sizeof l.admin_auth);
    return status;
}

/* --- expect ------------------------------------------------------------------------ */

/* The poison kinds in cmsctl gen's order (tools/cmsctl/gen.c), as the audit
 * service names the reason of each. */
static const char *const poison_kinds[] = {
    "undecodable",      "invalid_event_id",   "invalid_resource_id",
    "invalid_actor_id", "invalid_event_type", "invalid_event_type",
    "invalid_details",  "invalid_details",    "unknown_actor",
};
#define NPOISON (sizeof poison_kinds / sizeof poison_kinds[0])

static void sha256_hex(const uint8_t *data, size_t len, char out[65])
{
    uint8_t h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, data, len);
    sodium_bin2hex(out, 65, h, sizeof h);
}

static int cmd_expect(const cms_config *cfg)
{
    int status = EXIT_FAILED;
    cms_pbs_reader *r = NULL;
    FILE *out = NULL;
    const char *in = cms_config_str(cfg, "in"), *path = cms_config_str(cfg, "out");
    char *end;
    double fraction = strtod(cms_config_str(cfg, "bad-fraction"), &end);
    if (in == NULL || path == NULL || *end != '\0' || fraction < 0 || fraction > 1) {
        fprintf(stderr, PROG ": expect needs --in, --out and --bad-fraction 0..1\n");
        return EXIT_USAGE;
    }
    if (cms_pbs_reader_open(in, 1 << 20, &r) != CMS_PBS_OK) {
        fprintf(stderr, PROG ": %s: %s\n", in, strerror(errno));
        goto out;
    }
    out = fopen(path, "w");
    if (out == NULL) {
        fprintf(stderr, PROG ": %s: %s\n", path, strerror(errno));
        goto out;
    }
    uint64_t npoison = 0, valid = 0;
    for (uint64_t i = 0;; i++) {
        const uint8_t *data;
        size_t len;
        cms_pbs_err e = cms_pbs_next(r, &data, &len);
        if (e == CMS_PBS_EOF)
            break;
        if (e != CMS_PBS_OK) {
            fprintf(stderr, PROG ": %s: %s\n", in, cms_pbs_strerror(e));
            goto out;
        }
        /* gen's rule, computed as gen computes it */
        bool bad = fraction > 0 &&
                   (uint64_t)((double)(i + 1) * fraction) > (uint64_t)((double)i * fraction);
        const char *kind = bad ? poison_kinds[npoison++ % NPOISON] : "valid";
        valid += !bad;
        char h[65];
        sha256_hex(data, len, h);
        Cms__V1__Envelope *env = cms__v1__envelope__unpack(NULL, len, data);
        const char *id = env && env->event_id[0] ? env->event_id : "-";
        fprintf(out, "%s %s %s\n", h, id, kind);
        if (env)
            cms__v1__envelope__free_unpacked(env, NULL);
    }
    if (fclose(out) != 0) {
        out = NULL;
        fprintf(stderr, PROG ": writing %s failed\n", path);
        goto out;
    }
    out = NULL;
    printf("valid: %" PRIu64 "\npoison: %" PRIu64 "\n", valid, npoison);
    status = EXIT_DONE;
out:
    if (out)
        fclose(out);
    cms_pbs_reader_close(r);
    return status;
}

/* --- split ------------------------------------------------------------------------ */

/* Who may publish a record, as cmsctl replay would send it: on
 * cms.events.<event_type> when that is a usable subject, else (undecodable,
 * or a type that is no subject) on cms.events.unknown.*. Each service's
 * NATS user publishes only its own resource types (deploy/nats/gen-conf);
 * the user "publisher" everything else. */
enum { U_IDENTITY, U_CONTRACTS, U_TRAINING, U_PUBLISHER, U_COUNT };
static const char *const user_names[U_COUNT] = {"identity", "contracts", "training", "publisher"};

static bool usable_subject(const char *s)
{
    bool empty = true;
    if (*s == '\0' || strlen(s) > 128)
        return false;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c <= ' ' || c == 0x7F || c == '*' || c == '>')
            return false;
        if (c == '.' && empty)
            return false;
        empty = c == '.';
    }
    return !empty;
}

static int publisher_of(const uint8_t *data, size_t len)
{
    int u = U_PUBLISHER;
    Cms__V1__Envelope *env = cms__v1__envelope__unpack(NULL, len, data);
    if (env && usable_subject(env->event_type)) {
        size_t n = strcspn(env->event_type, ".");
        const char *t = env->event_type;
        if ((n == 8 && strncmp(t, "identity", 8) == 0) ||
            (n == 10 && strncmp(t, "credential", 10) == 0))
            u = U_IDENTITY;
        else if (n == 8 && strncmp(t, "contract", 8) == 0)
            u = U_CONTRACTS;
        else if (n == 12 && strncmp(t, "training_job", 12) == 0)
            u = U_TRAINING;
    }
    if (env)
        cms__v1__envelope__free_unpacked(env, NULL);
    return u;
}

static int cmd_split(const cms_config *cfg)
{
    int status = EXIT_FAILED;
    cms_pbs_reader *r = NULL;
    FILE *out[U_COUNT] = {NULL};
    uint64_t n[U_COUNT] = {0};
    char path[1024];
    const char *in = cms_config_str(cfg, "in"), *prefix = cms_config_str(cfg, "out");
    if (in == NULL || prefix == NULL) {
        fprintf(stderr, PROG ": split needs --in and --out (a prefix)\n");
        return EXIT_USAGE;
    }
    if (cms_pbs_reader_open(in, 1 << 20, &r) != CMS_PBS_OK) {
        fprintf(stderr, PROG ": %s: %s\n", in, strerror(errno));
        goto out;
    }
    for (int u = 0; u < U_COUNT; u++) {
        snprintf(path, sizeof path, "%s.%s.pbs", prefix, user_names[u]);
        if ((out[u] = fopen(path, "wb")) == NULL) {
            fprintf(stderr, PROG ": %s: %s\n", path, strerror(errno));
            goto out;
        }
    }
    for (;;) {
        const uint8_t *data;
        size_t len;
        cms_pbs_err e = cms_pbs_next(r, &data, &len);
        if (e == CMS_PBS_EOF)
            break;
        if (e != CMS_PBS_OK) {
            fprintf(stderr, PROG ": %s: %s\n", in, cms_pbs_strerror(e));
            goto out;
        }
        int u = publisher_of(data, len);
        if (cms_pbs_write(out[u], data, len) != CMS_PBS_OK) {
            fprintf(stderr, PROG ": writing %s.%s.pbs: %s\n", prefix, user_names[u],
                    strerror(errno));
            goto out;
        }
        n[u]++;
    }
    bool ok = true;
    for (int u = 0; u < U_COUNT; u++) {
        ok = fclose(out[u]) == 0 && ok;
        out[u] = NULL;
    }
    if (!ok) {
        fprintf(stderr, PROG ": writing %s.*.pbs failed\n", prefix);
        goto out;
    }
    for (int u = 0; u < U_COUNT; u++)
        printf("%s %" PRIu64 "\n", user_names[u], n[u]);
    status = EXIT_DONE;
out:
    for (int u = 0; u < U_COUNT; u++)
        if (out[u])
            fclose(out[u]);
    cms_pbs_reader_close(r);
    return status;
}

/* --- dlq -------------------------------------------------------------------------- */

static int cmd_dlq(const cms_config *cfg)
{
    int status = EXIT_FAILED;
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsStreamInfo *si = NULL;
    natsSubscription *sub = NULL;
    FILE *out = NULL;
    const char *path = cms_config_str(cfg, "out");
    int64_t wait_ms = cms_config_duration_ms(cfg, "wait");
    jsErrCode jerr = 0;
    if (path == NULL) {
        fprintf(stderr, PROG ": dlq needs --out\n");
        return EXIT_USAGE;
    }
    if (!connect_nats(cfg, &nc))
        goto out;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = wait_ms;
    natsStatus st = natsConnection_JetStream(&js, nc, &jo);
    /* the connection may still be coming up: ask until it answers */
    int64_t t0 = bench_mono_ns();
    while (st == NATS_OK) {
        st = js_GetStreamInfo(&si, js, CMS_BUS_DLQ_STREAM, NULL, &jerr);
        if (st == NATS_OK || bench_mono_ns() - t0 > wait_ms * 1000000)
            break;
        sleep_ms(200);
        st = NATS_OK;
    }
    if (st != NATS_OK) {
        fprintf(stderr, PROG ": stream %s: %s\n", CMS_BUS_DLQ_STREAM, natsStatus_GetText(st));
        goto out;
    }
    uint64_t last = si->State.LastSeq, n = 0;
    out = fopen(path, "w");
    if (out == NULL) {
        fprintf(stderr, PROG ": %s: %s\n", path, strerror(errno));
        goto out;
    }
    if (si->State.Msgs > 0) {
        jsSubOptions so;
        jsSubOptions_Init(&so);
        so.Stream = CMS_BUS_DLQ_STREAM;
        so.Ordered = true;
        so.Config.DeliverPolicy = js_DeliverAll;
        st = js_SubscribeSync(&sub, js, CMS_BUS_DLQ_PREFIX "audit", &jo, &so, &jerr);
        if (st != NATS_OK) {
            fprintf(stderr, PROG ": subscribing to %s: %s\n", CMS_BUS_DLQ_STREAM,
                    natsStatus_GetText(st));
            goto out;
        }
        for (;;) {
            natsMsg *m = NULL;
            jsMsgMetaData *md = NULL;
            st = natsSubscription_NextMsg(&m, sub, wait_ms);
            if (st == NATS_TIMEOUT)
                break; /* nothing more of cms.dlq.audit */
            if (st != NATS_OK) {
                fprintf(stderr, PROG ": reading %s: %s\n", CMS_BUS_DLQ_STREAM,
                        natsStatus_GetText(st));
                goto out;
            }
            const char *reason = NULL;
            if (natsMsgHeader_Get(m, CMS_BUS_DLQ_REASON, &reason) != NATS_OK || reason == NULL)
                reason = "-";
            char h[65];
            sha256_hex((const uint8_t *)natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), h);
            uint64_t seq = 0;
            if (natsMsg_GetMetaData(&md, m) == NATS_OK) {
                seq = md->Sequence.Stream;
                jsMsgMetaData_Destroy(md);
            }
            fprintf(out, "%s %s %" PRIu64 "\n", h, reason, seq);
            natsMsg_Destroy(m);
            n++;
            if (seq >= last)
                break;
        }
    }
    if (fclose(out) != 0) {
        out = NULL;
        fprintf(stderr, PROG ": writing %s failed\n", path);
        goto out;
    }
    out = NULL;
    printf("dead_letters: %" PRIu64 "\n", n);
    status = EXIT_DONE;
out:
    if (out)
        fclose(out);
    natsSubscription_Destroy(sub);
    jsStreamInfo_Destroy(si);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    (void)nats_CloseAndWait(5000);
    return status;
}

/* --- main -------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    static const bench_verb verbs[] = {
        {"load", cmd_load}, {"expect", cmd_expect}, {"split", cmd_split}, {"dlq", cmd_dlq}};
    return bench_main(argc, argv, PROG, "the command load and helpers of tests/chaos", options,
                      sizeof options / sizeof options[0], usage_tail, verbs,
                      sizeof verbs / sizeof verbs[0]);
}
