/* cms-bench-training: the load generator of tests/bench/training.
 *
 *   cms-bench-training rdp [--eps-reps N] [--sigma-reps N] ...
 *   cms-bench-training setup --admin-key-file F --workers W --parties-out F
 *   cms-bench-training contract --parties-file F --contract-out F
 *   cms-bench-training start --parties-file F --contract-file F --jobs N --jobs-out F
 *   cms-bench-training run --parties-file F --jobs-file F (--clients N | --rate N) ...
 *   cms-bench-training finish --parties-file F --jobs-file F --first-step N
 *   cms-bench-training respond --prefix P
 *   cms-bench-training e2e --parties-file F --contract-file F --jobs N --database-url U
 *
 * rdp: the accountant alone (common/rdp.h), no server: the time of
 * cms_rdp_eps (a curve over every default order and its epsilon) and of
 * cms_rdp_sigma_for (the noise multiplier for a target epsilon, to
 * TP_SIGMA_TOL), each over many repetitions; prints the median, p99, mean
 * and maximum in microseconds. With --target-epsilon, sigma is the one that
 * epsilon takes (as cms-training plans a job whose config names none).
 *
 * setup: through cms-identity (the admin's key), a provider and a consumer,
 * each with an API key and an Ed25519 public_key credential, and --workers
 * machine identities with an API key: the workers. Writes them one a line
 * to --parties-out (mode 0600, benchlib's format): the provider, the
 * consumer, then the workers.
 *
 * contract: a contract between them, through cms-contracts: create, submit,
 * the provider's and the consumer's signatures, activate (the service's
 * timer may be first: an activate refused then is fine). Writes its id to
 * --contract-out.
 *
 * start: the consumer submits --jobs jobs under the contract (the config of
 * --dataset-size, --batch-size, --epochs, --epsilon: the budget), then this
 * acts as the workers: pulls the dispatches from the durable --durable on
 * CMS_WORK, and reports STARTED for each as worker k mod W in the order
 * they come. Writes "<job id> <attempt> <worker index>" a line to
 * --jobs-out.
 *
 * run: PROGRESS reports of those jobs on <prefix>.training.report, each as
 * the job's worker ("Authorization: Bearer <its key>"), each with the next
 * step of its job (the first --first-step), so that every report moves its
 * job on. Closed loop (--rate 0): --clients clients, each with one report in
 * flight, client c reporting for jobs c, c + clients, ... in turn (so no
 * two reports of one job are ever in flight). Open loop (--rate N): report
 * g is due at g / N and goes at the first --tick-us tick at or after that,
 * its latency counted from that tick (no coordinated omission); connection
 * i reports for jobs i, i + connections, ... in turn. Over --connections
 * connections, one thread each, speaking the NATS text protocol itself
 * (benchlib.h says why). A report counts if it was sent in the measured
 * window (--seconds after --warmup); an error reply, a reply telling the
 * job to stop, or no reply within --timeout is an error, and the exit
 * status is then 1. Prints "key: value" lines, among them max_step: the
 * last step sent.
 *
 * finish: reports COMPLETED (steps --first-step) for every job of
 * --jobs-file, so that none is left running.
 *
 * respond: the baseline, a trivial nats.c responder on <prefix>.training.*
 * that answers each request, without reading it, with a fixed cms.v1.Reply
 * holding a ReportReply as cms-training answers a progress report.
 *
 * e2e: the consumer submits --jobs jobs (at most --in-flight at once) for
 * workers of their own (cms-worker) to run, a submit answered UNAVAILABLE
 * again after a jittered backoff (counted), then reads the jobs' statuses
 * from the database (--database-url) every --poll until every one has
 * ended; prints the submit rate, the time to drain and the jobs per second
 * from the first submit to the last job ended, and the jobs' latencies
 * from the database's times. Exit status 1 unless every job completed.
 *
 * A bench tool, not a service: it blocks, sleeps and uses threads freely. */
#include "apikey.h"
#include "benchlib.h"
#include "bus.h"
#include "cmd.h"
#include "config.h"
#include "log.h"
#include "rdp.h"
#include "uuid.h"

#include "cms/v1/command.pb-c.h"
#include "cms/v1/contracts.pb-c.h"
#include "cms/v1/training.pb-c.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <math.h>
#include <nats/nats.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#define PROG "cms-bench-training"

enum {
    EXIT_DONE = BENCH_EXIT_DONE,
    EXIT_FAILED = BENCH_EXIT_FAILED,
    EXIT_USAGE = BENCH_EXIT_USAGE
};

/* cms-training's TP_SIGMA_TOL (training/plan.h) */
#define SIGMA_TOL 1e-6

static const cms_option options[] = {
    {"nats-url", NULL, CMS_OPT_STRING, "nats://127.0.0.1:4222", "NATS server URL", false, false},
    {"prefix", NULL, CMS_OPT_STRING, "cms.cmd",
     "command subject root: requests go to <prefix>.<service>.<verb>", false, false},
    {"timeout", NULL, CMS_OPT_DURATION, "5s", "a request unanswered this long is an error", false,
     false},
    {"progress", NULL, CMS_OPT_BOOL, "false",
     "run, e2e: a line on stderr every second with the figures so far", false, false},
    {"eps-reps", NULL, CMS_OPT_INT, "2000", "rdp: repetitions of cms_rdp_eps", false, false},
    {"sigma-reps", NULL, CMS_OPT_INT, "200", "rdp: repetitions of cms_rdp_sigma_for", false, false},
    {"q", NULL, CMS_OPT_STRING, "0.01", "rdp: the sampling rate", false, false},
    {"sigma", NULL, CMS_OPT_STRING, "1.1",
     "rdp: the noise multiplier of cms_rdp_eps; the sigma search looks for the epsilon it gives",
     false, false},
    {"steps", NULL, CMS_OPT_INT, "100000", "rdp: the steps composed", false, false},
    {"target-epsilon", NULL, CMS_OPT_STRING, NULL,
     "rdp: instead of --sigma, the sigma whose steps give this epsilon (as a job's config "
     "without a noise_multiplier); searched once before the timings",
     false, false},
    {"delta", NULL, CMS_OPT_STRING, "1e-5", "rdp: delta", false, false},
    {"admin-key-file", NULL, CMS_OPT_STRING, NULL, "setup: file holding the admin API key", false,
     false},
    {"workers", NULL, CMS_OPT_INT, "4", "setup: worker identities to create", false, false},
    {"parties-out", NULL, CMS_OPT_STRING, NULL, "setup: where to write the parties", false, false},
    {"name-prefix", NULL, CMS_OPT_STRING, NULL,
     "setup: identity names start with this (default bench-<pid>-<time>)", false, false},
    {"parties-file", NULL, CMS_OPT_STRING, NULL,
     "the parties setup wrote (provider, consumer, workers)", false, false},
    {"contract-out", NULL, CMS_OPT_STRING, NULL, "contract: where to write the contract's id",
     false, false},
    {"contract-file", NULL, CMS_OPT_STRING, NULL, "start, e2e: the file contract wrote", false,
     false},
    {"jobs", NULL, CMS_OPT_INT, "256", "start, e2e: jobs to submit", false, false},
    {"jobs-out", NULL, CMS_OPT_STRING, NULL, "start: where to write the jobs", false, false},
    {"jobs-file", NULL, CMS_OPT_STRING, NULL, "run, finish: the jobs start wrote", false, false},
    {"durable", NULL, CMS_OPT_STRING, CMS_BUS_WORKERS_DURABLE,
     "start: the durable of CMS_WORK the dispatches are pulled from", false, false},
    {"architecture", NULL, CMS_OPT_STRING, "logistic_regression",
     "start, e2e: the config's model.architecture", false, false},
    {"dataset", NULL, CMS_OPT_STRING, "bench", "start, e2e: the config's training.dataset", false,
     false},
    {"dataset-size", NULL, CMS_OPT_INT, "200", "start, e2e: training.dataset_size", false, false},
    {"batch-size", NULL, CMS_OPT_INT, "50", "start, e2e: training.batch_size", false, false},
    {"epochs", NULL, CMS_OPT_INT, "1", "start, e2e: training.epochs", false, false},
    {"epsilon", NULL, CMS_OPT_STRING, "1",
     "start, e2e: privacy.epsilon of the config, and the job's privacy_budget", false, false},
    {"clients", NULL, CMS_OPT_INT, "64", "run, closed loop: reports in flight, one per client",
     false, false},
    {"rate", NULL, CMS_OPT_INT, "0", "run: open loop at this many reports per second (0: closed)",
     false, false},
    {"connections", NULL, CMS_OPT_INT, "4", "run: NATS connections the load is spread over", false,
     false},
    {"tick-us", NULL, CMS_OPT_INT, "200",
     "run, open loop: a report goes at the first tick (a multiple of this) at or after its due "
     "time, its latency counted from that tick",
     false, false},
    {"seconds", NULL, CMS_OPT_INT, "10", "run: length of the measured window", false, false},
    {"warmup", NULL, CMS_OPT_DURATION, "1s",
     "run: load before the measured window, not counted in the figures", false, false},
    {"first-step", NULL, CMS_OPT_INT, "1",
     "run: the step of each job's first report; finish: the steps of the final reports", false,
     false},
    {"buffered", NULL, CMS_OPT_BOOL, "false",
     "respond: leave replies in nats.c's buffer for its flusher thread (up to 1 ms later) "
     "instead of writing each at once",
     false, false},
    {"database-url", NULL, CMS_OPT_STRING, NULL,
     "e2e: libpq conninfo of the database, as a role that sees every job", false, false},
    {"in-flight", NULL, CMS_OPT_INT, "16", "e2e: submits in flight at once", false, false},
    {"poll", NULL, CMS_OPT_DURATION, "20ms", "e2e: how often the jobs' statuses are read", false,
     false},
    {"e2e-timeout", NULL, CMS_OPT_DURATION, "10m",
     "e2e: the longest the jobs may take to end, from the first submit", false, false},
};

static const char usage_tail[] =
    "VERB\n"
    "\n"
    "verbs:\n"
    "  rdp        time the accountant: cms_rdp_eps and cms_rdp_sigma_for (no server)\n"
    "  setup      a provider, a consumer (each with an API key and a public key) and --workers\n"
    "             machine identities with an API key, into --parties-out\n"
    "  contract   an active contract between the provider and the consumer, its id into\n"
    "             --contract-out\n"
    "  start      submit --jobs jobs, take their dispatches from CMS_WORK and report each\n"
    "             STARTED as a worker; the jobs into --jobs-out\n"
    "  run        PROGRESS reports of those jobs on <prefix>.training.report: closed loop\n"
    "             with --clients, open loop with --rate; prints reports/s and latencies\n"
    "  finish     report COMPLETED for every job of --jobs-file\n"
    "  respond    a trivial responder on <prefix>.training.* (the baseline); prints \"ready\"\n"
    "             once subscribed, runs until SIGTERM or SIGINT\n"
    "  e2e        submit --jobs jobs for cms-worker processes and wait until every one ended;\n"
    "             prints jobs/s end to end and the time to drain\n"
    "\n"
    "Exit status: 0 done (run: no errors; e2e: every job completed), 1 failed or errors, 2 usage "
    "error.";

/* --- shared ------------------------------------------------------------------ */

/* A number option (a string, so that it may be fractional); false if it
 * does not read as a finite number. */
static bool opt_double(const cms_config *cfg, const char *name, double *out)
{
    const char *s = cms_config_str(cfg, name);
    char *end = NULL;
    if (s == NULL)
        return false;
    errno = 0;
    *out = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !isfinite(*out)) {
        fprintf(stderr, PROG ": --%s wants a number, not \"%s\"\n", name, s);
        return false;
    }
    return true;
}

/* The parties of the file: the provider, the consumer, at least one worker. */
typedef struct parties {
    bench_party *v;
    size_t n;
} parties;

#define PROVIDER(p) (&(p)->v[0])
#define CONSUMER(p) (&(p)->v[1])
#define WORKER(p, i) (&(p)->v[2 + (i)])
#define NWORKERS(p) ((p)->n - 2)

static bool parties_load(const cms_config *cfg, parties *out)
{
    const char *path = cms_config_str(cfg, "parties-file");
    if (path == NULL) {
        fprintf(stderr, PROG ": --parties-file is needed\n");
        return false;
    }
    if (!bench_parties_load(PROG, path, &out->v, &out->n))
        return false;
    if (out->n < 3 || PROVIDER(out)->key_id[0] == '\0' || CONSUMER(out)->key_id[0] == '\0') {
        fprintf(stderr,
                PROG ": %s holds %zu parties: want a provider and a consumer with keys, then "
                     "workers\n",
                path, out->n);
        bench_parties_free(out->v, out->n);
        out->v = NULL;
        out->n = 0;
        return false;
    }
    return true;
}

static void parties_free(parties *p)
{
    bench_parties_free(p->v, p->n);
    p->v = NULL;
    p->n = 0;
}

static bool bearer(const bench_party *p, char *out, size_t cap)
{
    int n = snprintf(out, cap, "Bearer %s", p->api_key);
    return n > 0 && (size_t)n < cap;
}

/* The first line of path (a contract id). */
static bool read_id(const char *path, char out[CMS_UUID_STRLEN + 1])
{
    char line[128] = "";
    FILE *f = path ? fopen(path, "r") : NULL;
    if (f == NULL) {
        fprintf(stderr, PROG ": %s: %s\n", path ? path : "(no file)", strerror(errno));
        return false;
    }
    bool ok = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    line[strcspn(line, "\r\n ")] = '\0';
    if (!ok || strlen(line) != CMS_UUID_STRLEN) {
        fprintf(stderr, PROG ": %s holds no id\n", path);
        return false;
    }
    memcpy(out, line, CMS_UUID_STRLEN + 1);
    return true;
}

static FILE *create_private(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (f == NULL) {
        fprintf(stderr, PROG ": %s: %s\n", path, strerror(errno));
        if (fd >= 0)
            close(fd);
    }
    return f;
}

static bool connect_nats(const cms_config *cfg, natsConnection **nc)
{
    natsStatus st = natsConnection_ConnectTo(nc, cms_config_str(cfg, "nats-url"));
    if (st != NATS_OK)
        fprintf(stderr, PROG ": connecting to NATS: %s\n", natsStatus_GetText(st));
    return st == NATS_OK;
}

static void disconnect_nats(natsConnection *nc)
{
    natsConnection_Destroy(nc);
    (void)nats_CloseAndWait(5000);
}

/* The job config of the options; false if it does not fit. */
static bool job_config(const cms_config *cfg, char *out, size_t cap, double *epsilon)
{
    if (!opt_double(cfg, "epsilon", epsilon))
        return false;
    int n =
        snprintf(out, cap,
                 "{\"model\":{\"architecture\":\"%s\"},"
                 "\"privacy\":{\"epsilon\":%.17g,\"delta\":1e-5,\"noise_mechanism\":\"gaussian\"},"
                 "\"training\":{\"batch_size\":%" PRId64 ",\"epochs\":%" PRId64
                 ",\"learning_rate\":0.5,\"dataset\":\"%s\",\"dataset_size\":%" PRId64
                 ",\"max_grad_norm\":1.0}}",
                 cms_config_str(cfg, "architecture"), *epsilon, cms_config_int(cfg, "batch-size"),
                 cms_config_int(cfg, "epochs"), cms_config_str(cfg, "dataset"),
                 cms_config_int(cfg, "dataset-size"));
    return n > 0 && (size_t)n < cap;
}

/* --- jobs file ---------------------------------------------------------------- */

/* A started job: its attempt, its worker. step: the last step reported;
 * during run only the thread of the job's client (or connection) touches
 * it. */
typedef struct job {
    char id[CMS_UUID_STRLEN + 1];
    int attempt;
    uint32_t worker;
    int64_t step;
} job;

static bool jobs_load(const char *path, size_t nworkers, job **out, size_t *n)
{
    bool ok = false;
    job *v = NULL;
    size_t len = 0, cap = 0;
    char line[256];
    FILE *f = path ? fopen(path, "r") : NULL;
    if (f == NULL) {
        fprintf(stderr, PROG ": %s: %s\n", path ? path : "(no --jobs-file)", strerror(errno));
        goto out;
    }
    while (fgets(line, sizeof line, f)) {
        char id[64];
        int attempt = 0;
        unsigned worker = 0;
        if (line[0] == '\n')
            continue;
        if (sscanf(line, "%63s %d %u", id, &attempt, &worker) != 3 ||
            strlen(id) != CMS_UUID_STRLEN || attempt < 1 || worker >= nworkers) {
            fprintf(stderr, PROG ": %s, job %zu: not \"<id> <attempt> <worker index>\"\n", path,
                    len + 1);
            goto out;
        }
        if (len == cap) {
            cap = cap ? 2 * cap : 256;
            job *nv = realloc(v, cap * sizeof *v);
            if (nv == NULL)
                goto out;
            v = nv;
        }
        memcpy(v[len].id, id, sizeof v[len].id);
        v[len].attempt = attempt;
        v[len].worker = worker;
        v[len].step = 0;
        len++;
    }
    if (len == 0) {
        fprintf(stderr, PROG ": %s holds no job\n", path);
        goto out;
    }
    ok = true;
out:
    if (f)
        fclose(f);
    if (!ok) {
        free(v);
        v = NULL;
        len = 0;
    }
    *out = v;
    *n = len;
    return ok;
}

/* --- rdp ---------------------------------------------------------------------- */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Sorts v and prints its median, p99, mean and maximum as <name>_*_us. */
static void print_times(const char *name, int64_t *v, size_t n)
{
    double sum = 0;
    qsort(v, n, sizeof *v, cmp_i64);
    for (size_t i = 0; i < n; i++)
        sum += (double)v[i];
    size_t p50 = (n + 1) / 2 - 1, p99 = (size_t)ceil(0.99 * (double)n) - 1;
    printf("%s_reps: %zu\n", name, n);
    printf("%s_p50_us: %.1f\n", name, (double)v[p50] / 1e3);
    printf("%s_p99_us: %.1f\n", name, (double)v[p99] / 1e3);
    printf("%s_mean_us: %.1f\n", name, sum / (double)n / 1e3);
    printf("%s_max_us: %.1f\n", name, (double)v[n - 1] / 1e3);
}

static int cmd_rdp(const cms_config *cfg)
{
    int status = EXIT_FAILED;
    int64_t *te = NULL, *ts = NULL;
    double q = 0, sigma = 0, delta = 0, eps = 0, order = 0, found = 0;
    int64_t steps = cms_config_int(cfg, "steps");
    int64_t neps = cms_config_int(cfg, "eps-reps"), nsig = cms_config_int(cfg, "sigma-reps");
    double target = 0;
    bool by_target = cms_config_str(cfg, "target-epsilon") != NULL;
    if (!opt_double(cfg, "q", &q) || !opt_double(cfg, "sigma", &sigma) ||
        !opt_double(cfg, "delta", &delta) ||
        (by_target && (!opt_double(cfg, "target-epsilon", &target) || target <= 0)) || neps < 1 ||
        nsig < 1 || neps > 10000000 || nsig > 1000000 || steps < 0) {
        fprintf(stderr, PROG ": rdp wants --eps-reps 1..10000000, --sigma-reps 1..1000000 and "
                             "--steps >= 0\n");
        status = EXIT_USAGE;
        goto out;
    }
    te = malloc((size_t)neps * sizeof *te);
    ts = malloc((size_t)nsig * sizeof *ts);
    if (te == NULL || ts == NULL)
        goto out;
    if (by_target && !cms_rdp_sigma_for(q, steps, delta, target, SIGMA_TOL, &sigma)) {
        fprintf(stderr, PROG ": no sigma gives epsilon %g for q %g, %" PRId64 " steps\n", target, q,
                steps);
        goto out;
    }
    if (!cms_rdp_eps(q, sigma, steps, delta, &eps, &order)) {
        fprintf(stderr, PROG ": cms_rdp_eps refuses q %g, sigma %g, %" PRId64 " steps, delta %g\n",
                q, sigma, steps, delta);
        goto out;
    }
    double cpu0 = bench_cpu_seconds();
    for (int64_t i = 0; i < neps; i++) {
        double e = 0, o = 0;
        int64_t t0 = bench_mono_ns();
        bool ok = cms_rdp_eps(q, sigma, steps, delta, &e, &o);
        te[i] = bench_mono_ns() - t0;
        if (!ok || e != eps) {
            fprintf(stderr, PROG ": cms_rdp_eps gave another answer on repetition %" PRId64 "\n",
                    i);
            goto out;
        }
    }
    /* the target is the epsilon sigma gives: the search should find sigma */
    for (int64_t i = 0; i < nsig; i++) {
        double s = 0;
        int64_t t0 = bench_mono_ns();
        bool ok = cms_rdp_sigma_for(q, steps, delta, eps, SIGMA_TOL, &s);
        ts[i] = bench_mono_ns() - t0;
        if (!ok) {
            fprintf(stderr, PROG ": cms_rdp_sigma_for found no sigma for epsilon %g\n", eps);
            goto out;
        }
        found = s;
    }
    double cpu = bench_cpu_seconds() - cpu0;
    size_t norders = 0;
    (void)cms_rdp_orders(&norders);
    printf("q: %g\nsigma: %g\nsteps: %" PRId64 "\ndelta: %g\norders: %zu\n", q, sigma, steps, delta,
           norders);
    printf("epsilon: %.6f\nbest_order: %g\nsigma_found: %.9f\nsigma_tolerance: %g\n", eps, order,
           found, SIGMA_TOL);
    print_times("eps", te, (size_t)neps);
    print_times("sigma", ts, (size_t)nsig);
    printf("cpu_s: %.2f\n", cpu);
    status = EXIT_DONE;
out:
    free(te);
    free(ts);
    return status;
}

/* --- setup -------------------------------------------------------------------- */

static int cmd_setup(const cms_config *cfg)
{
    int status = EXIT_FAILED;
    natsConnection *nc = NULL;
    FILE *out = NULL;
    bench_party p;
    char key[256], auth[300], name[200], default_prefix[64];
    const char *prefix = cms_config_str(cfg, "prefix");
    const char *admin_file = cms_config_str(cfg, "admin-key-file");
    const char *parties_out = cms_config_str(cfg, "parties-out");
    int64_t workers = cms_config_int(cfg, "workers");
    int64_t timeout_ms = cms_config_duration_ms(cfg, "timeout");
    snprintf(default_prefix, sizeof default_prefix, "bench-%d-%" PRId64, (int)getpid(),
             bench_unix_us());
    const char *name_prefix =
        cms_config_str(cfg, "name-prefix") ? cms_config_str(cfg, "name-prefix") : default_prefix;
    if (admin_file == NULL || parties_out == NULL || workers < 1 || workers > 10000) {
        fprintf(stderr, PROG ": setup needs --admin-key-file, --parties-out and --workers "
                             "1..10000\n");
        status = EXIT_USAGE;
        goto out;
    }
    if (!bench_read_key_file(PROG, admin_file, key))
        goto out;
    snprintf(auth, sizeof auth, "Bearer %s", key);
    if (!connect_nats(cfg, &nc) || (out = create_private(parties_out)) == NULL)
        goto out;
    for (int64_t i = 0; i < 2 + workers; i++) {
        if (i < 2)
            snprintf(name, sizeof name, "%s-%s", name_prefix, i ? "consumer" : "provider");
        else
            snprintf(name, sizeof name, "%s-worker-%" PRId64, name_prefix, i - 2);
        if (bench_party_create(PROG, nc, prefix, auth, name, "machine", i < 2, timeout_ms, &p) != 0)
            goto out;
        bool written = bench_party_write(out, &p);
        sodium_memzero(&p, sizeof p);
        if (!written) {
            fprintf(stderr, PROG ": writing %s failed\n", parties_out);
            goto out;
        }
    }
    if (fclose(out) != 0) {
        out = NULL;
        fprintf(stderr, PROG ": writing %s failed\n", parties_out);
        goto out;
    }
    out = NULL;
    printf("parties: %" PRId64 "\nworkers: %" PRId64 "\n", 2 + workers, workers);
    status = EXIT_DONE;
out:
    if (out)
        fclose(out);
    disconnect_nats(nc);
    sodium_memzero(key, sizeof key);
    sodium_memzero(auth, sizeof auth);
    return status;
}

/* --- contract ----------------------------------------------------------------- */

static int contract_call(const cms_config *cfg, natsConnection *nc, const bench_party *who,
                         const char *verb, const ProtobufCMessage *req, bool quiet,
                         Cms__V1__Contract **out)
{
    char auth[CMS_APIKEY_LEN + 16];
    if (!bearer(who, auth, sizeof auth))
        return -1;
    int code = bench_command(PROG, nc, cms_config_str(cfg, "prefix"), "contracts", verb, auth, req,
                             &cms__v1__contract__descriptor, cms_config_duration_ms(cfg, "timeout"),
                             quiet, (ProtobufCMessage **)out);
    sodium_memzero(auth, sizeof auth);
    return code;
}

static int contract_sign(const cms_config *cfg, natsConnection *nc, const bench_party *who,
                         const Cms__V1__Contract *k, Cms__V1__Contract **out)
{
    char sig[BENCH_SIG_MAX];
    if (!bench_sign_hash(who, k->content_hash, sig)) {
        fprintf(stderr, PROG ": cannot sign the content hash \"%s\"\n", k->content_hash);
        return -1;
    }
    Cms__V1__SignContract m = CMS__V1__SIGN_CONTRACT__INIT;
    m.id = k->id;
    m.signature = sig;
    m.key_id = (char *)who->key_id;
    return contract_call(cfg, nc, who, "sign", &m.base, false, out);
}

static int cmd_contract(const cms_config *cfg)
{
    int status = EXIT_FAILED;
    parties ps = {0};
    natsConnection *nc = NULL;
    Cms__V1__Contract *k = NULL, *r = NULL;
    FILE *out = NULL;
    char terms[1024];
    const char *path = cms_config_str(cfg, "contract-out");
    if (path == NULL) {
        fprintf(stderr, PROG ": contract needs --contract-out\n");
        status = EXIT_USAGE;
        goto out;
    }
    if (!parties_load(cfg, &ps) || !connect_nats(cfg, &nc))
        goto out;
    bench_contract_terms(terms, sizeof terms, NULL);
    Cms__V1__CreateContract c = CMS__V1__CREATE_CONTRACT__INIT;
    c.title = (char *)"Training benchmark";
    c.description = (char *)"The provider's data, for the consumer's training jobs.";
    c.provider_id = PROVIDER(&ps)->id;
    c.consumer_id = CONSUMER(&ps)->id;
    c.terms_json = terms;
    c.metadata_json = (char *)"";
    if (contract_call(cfg, nc, PROVIDER(&ps), "create", &c.base, false, &k) != 0)
        goto out;
    Cms__V1__ContractRef ref = CMS__V1__CONTRACT_REF__INIT;
    ref.id = k->id;
    if (contract_call(cfg, nc, PROVIDER(&ps), "submit", &ref.base, false, &r) != 0)
        goto out;
    cms__v1__contract__free_unpacked(r, NULL);
    r = NULL;
    if (contract_sign(cfg, nc, PROVIDER(&ps), k, &r) != 0)
        goto out;
    cms__v1__contract__free_unpacked(r, NULL);
    r = NULL;
    if (contract_sign(cfg, nc, CONSUMER(&ps), k, &r) != 0)
        goto out;
    if (strcmp(r->status, "active") != 0) {
        cms__v1__contract__free_unpacked(r, NULL);
        r = NULL;
        /* refused when cms-contracts' timer activated it first */
        int code = contract_call(cfg, nc, PROVIDER(&ps), "activate", &ref.base, true, &r);
        if (code != 0 && code != CMS__V1__ERROR_CODE__FAILED_PRECONDITION) {
            fprintf(stderr, PROG ": activate: %s\n", cms_cmd_code_name((cms_cmd_code)code));
            goto out;
        }
    }
    if ((out = create_private(path)) == NULL)
        goto out;
    fprintf(out, "%s\n", k->id);
    if (fclose(out) != 0) {
        out = NULL;
        fprintf(stderr, PROG ": writing %s failed\n", path);
        goto out;
    }
    out = NULL;
    printf("contract: %s\n", k->id);
    status = EXIT_DONE;
out:
    if (out)
        fclose(out);
    if (k)
        cms__v1__contract__free_unpacked(k, NULL);
    if (r)
        cms__v1__contract__free_unpacked(r, NULL);
    disconnect_nats(nc);
    parties_free(&ps);
    return status;
}

/* --- start, finish ------------------------------------------------------------ */

static int submit_job(const cms_config *cfg, natsConnection *nc, const bench_party *consumer,
                      const char *contract_id, const char *config, double budget,
                      char id[CMS_UUID_STRLEN + 1])
{
    char auth[CMS_APIKEY_LEN + 16];
    Cms__V1__TrainingJob *j = NULL;
    Cms__V1__SubmitJob m = CMS__V1__SUBMIT_JOB__INIT;
    m.model_name = (char *)"";
    m.contract_id = (char *)contract_id;
    m.config_json = (char *)config;
    m.privacy_budget = budget;
    if (!bearer(consumer, auth, sizeof auth))
        return -1;
    int code =
        bench_command(PROG, nc, cms_config_str(cfg, "prefix"), "training", "submit", auth, &m.base,
                      &cms__v1__training_job__descriptor, cms_config_duration_ms(cfg, "timeout"),
                      false, (ProtobufCMessage **)&j);
    sodium_memzero(auth, sizeof auth);
    if (code == 0) {
        snprintf(id, CMS_UUID_STRLEN + 1, "%s", j->id);
        cms__v1__training_job__free_unpacked(j, NULL);
    }
    return code;
}

/* A report of worker w; 0 and the reply into *out (may be NULL), or the
 * error code. */
static int report(const cms_config *cfg, natsConnection *nc, const bench_party *w,
                  const char *job_id, int attempt, Cms__V1__ReportKind kind, int64_t steps,
                  Cms__V1__ReportReply **out)
{
    char auth[CMS_APIKEY_LEN + 16];
    Cms__V1__ReportReply *r = NULL;
    Cms__V1__WorkerReport m = CMS__V1__WORKER_REPORT__INIT;
    m.job_id = (char *)job_id;
    m.attempt = attempt;
    m.kind = kind;
    m.steps = steps;
    m.loss = 0.5;
    m.accuracy = 0.75;
    m.examples = steps * cms_config_int(cfg, "batch-size");
    m.message = (char *)"";
    if (!bearer(w, auth, sizeof auth))
        return -1;
    int code =
        bench_command(PROG, nc, cms_config_str(cfg, "prefix"), "training", "report", auth, &m.base,
                      &cms__v1__report_reply__descriptor, cms_config_duration_ms(cfg, "timeout"),
                      false, (ProtobufCMessage **)&r);
    sodium_memzero(auth, sizeof auth);
    if (code == 0 && out)
        *out = r;
    else if (r)
        cms__v1__report_reply__free_unpacked(r, NULL);
    return code;
}

static int cmd_start(const cms_config *cfg)
{
    int status = EXIT_FAILED;
    parties ps = {0};
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    natsSubscription *sub = NULL;
    FILE *out = NULL;
    char(*ids)[CMS_UUID_STRLEN + 1] = NULL;
    bool *started = NULL;
    char contract[CMS_UUID_STRLEN + 1], config[1024];
    double budget = 0;
    int64_t njobs = cms_config_int(cfg, "jobs");
    const char *path = cms_config_str(cfg, "jobs-out");
    const char *durable = cms_config_str(cfg, "durable");
    if (path == NULL || njobs < 1 || njobs > 1000000) {
        fprintf(stderr, PROG ": start needs --jobs-out and --jobs 1..1000000\n");
        status = EXIT_USAGE;
        goto out;
    }
    if (!job_config(cfg, config, sizeof config, &budget)) {
        status = EXIT_USAGE;
        goto out;
    }
    if (!parties_load(cfg, &ps) || !read_id(cms_config_str(cfg, "contract-file"), contract) ||
        !connect_nats(cfg, &nc))
        goto out;
    ids = calloc((size_t)njobs, sizeof *ids);
    started = calloc((size_t)njobs, sizeof *started);
    if (ids == NULL || started == NULL)
        goto out;
    int64_t t0 = bench_mono_ns();
    for (int64_t i = 0; i < njobs; i++)
        if (submit_job(cfg, nc, CONSUMER(&ps), contract, config, budget, ids[i]) != 0)
            goto out;
    int64_t t_submitted = bench_mono_ns();

    jsErrCode jerr = 0;
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = CMS_BUS_WORK_STREAM;
    so.Consumer = durable;
    so.ManualAck = true;
    natsStatus st = natsConnection_JetStream(&js, nc, NULL);
    if (st == NATS_OK)
        st = js_PullSubscribe(&sub, js, CMS_BUS_WORK_TRAINING, durable, NULL, &so, &jerr);
    if (st != NATS_OK) {
        fprintf(stderr, PROG ": pulling from %s on %s: %s (%d)\n", durable, CMS_BUS_WORK_STREAM,
                natsStatus_GetText(st), (int)jerr);
        goto out;
    }
    if ((out = create_private(path)) == NULL)
        goto out;
    int64_t nstarted = 0, deadline = bench_mono_ns() + 60 * INT64_C(1000000000);
    while (nstarted < njobs) {
        natsMsgList list = {0};
        if (bench_mono_ns() > deadline) {
            fprintf(stderr, PROG ": %" PRId64 " of %" PRId64 " dispatches came in 60 s\n", nstarted,
                    njobs);
            goto out;
        }
        st = natsSubscription_Fetch(&list, sub, 64, 2000, &jerr);
        if (st == NATS_TIMEOUT)
            continue;
        if (st != NATS_OK) {
            fprintf(stderr, PROG ": fetching dispatches: %s (%d)\n", natsStatus_GetText(st),
                    (int)jerr);
            goto out;
        }
        for (int k = 0; k < list.Count; k++) {
            natsMsg *msg = list.Msgs[k];
            Cms__V1__TrainingDispatch *d = cms__v1__training_dispatch__unpack(
                NULL, (size_t)natsMsg_GetDataLength(msg), (const uint8_t *)natsMsg_GetData(msg));
            int64_t i = -1;
            for (int64_t x = 0; d && x < njobs && i < 0; x++)
                if (!started[x] && strcmp(ids[x], d->job_id) == 0)
                    i = x;
            int code = 0;
            uint32_t w = (uint32_t)(nstarted % (int64_t)NWORKERS(&ps));
            if (i >= 0) {
                code = report(cfg, nc, WORKER(&ps, w), d->job_id, d->attempt,
                              CMS__V1__REPORT_KIND__REPORT_KIND_STARTED, 0, NULL);
                if (code == 0) {
                    started[i] = true;
                    nstarted++;
                    fprintf(out, "%s %d %u\n", d->job_id, d->attempt, w);
                }
            }
            /* one not ours (another run's) is acked too: it is nobody's */
            (void)natsMsg_Ack(msg, NULL);
            if (d)
                cms__v1__training_dispatch__free_unpacked(d, NULL);
            if (code != 0) {
                natsMsgList_Destroy(&list);
                goto out;
            }
        }
        natsMsgList_Destroy(&list);
    }
    if (fclose(out) != 0) {
        out = NULL;
        fprintf(stderr, PROG ": writing %s failed\n", path);
        goto out;
    }
    out = NULL;
    int64_t t_end = bench_mono_ns();
    printf("jobs: %" PRId64 "\nworkers: %zu\n", njobs, NWORKERS(&ps));
    printf("submit_s: %.3f\nsubmit_rate: %.0f\n", (double)(t_submitted - t0) / 1e9,
           (double)njobs * 1e9 / (double)(t_submitted - t0 > 0 ? t_submitted - t0 : 1));
    printf("start_s: %.3f\n", (double)(t_end - t_submitted) / 1e9);
    status = EXIT_DONE;
out:
    if (out)
        fclose(out);
    if (sub) {
        natsSubscription_Destroy(sub);
    }
    jsCtx_Destroy(js);
    disconnect_nats(nc);
    free(ids);
    free(started);
    parties_free(&ps);
    return status;
}

static int cmd_finish(const cms_config *cfg)
{
    int status = EXIT_FAILED;
    parties ps = {0};
    natsConnection *nc = NULL;
    job *jobs = NULL;
    size_t njobs = 0, completed = 0;
    if (!parties_load(cfg, &ps) ||
        !jobs_load(cms_config_str(cfg, "jobs-file"), NWORKERS(&ps), &jobs, &njobs) ||
        !connect_nats(cfg, &nc))
        goto out;
    for (size_t i = 0; i < njobs; i++) {
        if (report(cfg, nc, WORKER(&ps, jobs[i].worker), jobs[i].id, jobs[i].attempt,
                   CMS__V1__REPORT_KIND__REPORT_KIND_COMPLETED, cms_config_int(cfg, "first-step"),
                   NULL) != 0)
            goto out;
        completed++;
    }
    printf("completed: %zu\n", completed);
    status = EXIT_DONE;
out:
    disconnect_nats(nc);
    free(jobs);
    parties_free(&ps);
    return status;
}

/* --- run ---------------------------------------------------------------------- */

/* Outcomes of a report. Codes 1..31 are the cms.v1.ErrorCode values of
 * error replies. */
enum {
    OUT_NO_RESPONDERS = 32, /* the server's 503: nobody subscribed */
    OUT_BAD_REPLY,          /* not a cms.v1.Reply with an outcome, or not a ReportReply */
    OUT_STOP,               /* the job is told to stop: it no longer runs for the benchmark */
    OUT_TIMEOUT,            /* no reply within --timeout */
    OUT_KINDS
};

static const char *outcome_name(int k)
{
    switch (k) {
    case OUT_NO_RESPONDERS:
        return "NO_RESPONDERS";
    case OUT_BAD_REPLY:
        return "BAD_REPLY";
    case OUT_STOP:
        return "STOP";
    case OUT_TIMEOUT:
        return "TIMEOUT";
    default:
        return cms_cmd_code_name((cms_cmd_code)k);
    }
}

#define SWEEP_NS 10000000 /* timeouts are looked for every 10 ms */
#define BODY_MAX 512      /* a report is about a hundred bytes */

/* A report in flight: seq its number (0: slot free), owner the client (or,
 * in the open loop, the connection's one owner) that sent it. Request seq
 * lives in ring[seq & mask]. */
typedef struct slot {
    uint64_t seq;
    uint32_t owner;
    int64_t t_ns;
} slot;

typedef struct bench bench;

/* One reporter of jobs owner, owner + nowners, ...: a closed-loop client
 * (nowners = --clients) or an open-loop connection (nowners =
 * --connections). turn counts its reports. */
typedef struct owner {
    uint32_t index;
    uint64_t turn;
} owner;

/* Everything of one connection belongs to its thread until it is joined,
 * but for the counters progress reads (atomics). */
typedef struct conn {
    bench *b;
    int index;
    bench_nats *nats; /* its first error is the connection's */
    pthread_t thread;
    bool started;
    slot *ring;
    uint64_t mask;
    uint64_t next_seq, sweep_seq;
    owner *owners; /* closed loop: its clients; open loop: itself */
    uint32_t nowners;
    int64_t in_flight;
    uint64_t due; /* open loop: reports of this connection due so far */
    uint64_t sent, replies, ok;
    uint64_t out[OUT_KINDS];
    int64_t max_step;
    _Atomic uint64_t done_all, errors_all; /* for progress, warm-up included */
    bench_hist *lat, *send_lag;
    bool failed;
} conn;

struct bench {
    char subject[256]; /* "<prefix>.training.report" */
    const parties *ps;
    job *jobs;
    uint32_t njobs;
    uint32_t nowners; /* the owners the jobs are dealt to */
    int64_t batch;
    bool closed;
    int64_t rate, tick_ns, timeout_ns;
    int64_t t0, t_measure, t_end;
    _Atomic int running;
    conn *conns;
    int nconns;
};

static bool measured(const bench *b, int64_t t_ns)
{
    return t_ns >= b->t_measure && t_ns < b->t_end;
}

/* The jobs of owner o (index i of nowners): i, i + nowners, ... */
static uint32_t owner_jobs(const bench *b, uint32_t i)
{
    return (b->njobs - i + b->nowners - 1) / b->nowners;
}

static bool settle(conn *c, uint64_t seq, uint32_t *owner_out)
{
    slot *s = &c->ring[seq & c->mask];
    if (seq == 0 || s->seq != seq)
        return false;
    s->seq = 0;
    c->in_flight--;
    if (owner_out)
        *owner_out = s->owner;
    return true;
}

static void count_error(conn *c, int kind)
{
    c->out[kind]++;
    atomic_fetch_add_explicit(&c->errors_all, 1, memory_order_relaxed);
}

/* The next report of owner o (an index into c->owners), stamped t_ns. */
static bool queue_report(conn *c, uint32_t o, int64_t t_ns)
{
    bench *b = c->b;
    owner *ow = &c->owners[o];
    uint32_t k = (uint32_t)(ow->turn++ % owner_jobs(b, ow->index));
    job *j = &b->jobs[ow->index + (uint64_t)k * b->nowners];
    uint64_t seq = ++c->next_seq;
    slot *s = &c->ring[seq & c->mask];
    /* a report a whole ring older still unanswered: long past its timeout */
    if (s->seq != 0 && settle(c, s->seq, NULL))
        count_error(c, OUT_TIMEOUT);
    s->seq = seq;
    s->owner = o;
    s->t_ns = t_ns;
    c->in_flight++;
    c->sent++;
    j->step++;
    if (j->step > c->max_step)
        c->max_step = j->step;

    Cms__V1__WorkerReport m = CMS__V1__WORKER_REPORT__INIT;
    m.job_id = j->id;
    m.attempt = j->attempt;
    m.kind = CMS__V1__REPORT_KIND__REPORT_KIND_PROGRESS;
    m.steps = j->step;
    m.loss = 1.0 / (double)(j->step + 1);
    m.accuracy = 0.5;
    m.examples = j->step * b->batch;
    m.message = (char *)"";
    uint8_t pb[BODY_MAX];
    size_t len = cms__v1__worker_report__get_packed_size(&m);
    if (len > sizeof pb) {
        bench_nats_error(c->nats, "a report does not fit in %zu bytes", sizeof pb);
        return false;
    }
    cms__v1__worker_report__pack(&m, pb);
    const bench_party *w = WORKER(b->ps, j->worker);
    return bench_nats_publish(c->nats, b->subject, seq, w->hdr, w->hdr_len, pb, len);
}

/* In the closed loop, owner o sends its next report at t while the window
 * is open. */
static bool next_report(conn *c, uint32_t o, int64_t t)
{
    return !c->b->closed || t >= c->b->t_end || queue_report(c, o, t);
}

/* The reply to report seq of connection arg, read at t_now (a
 * bench_nats_msg_fn). */
static bool on_reply(void *arg, uint64_t seq, const char *hdr, size_t hdr_len, const char *data,
                     size_t len, int64_t t_now)
{
    conn *c = arg;
    bench *b = c->b;
    uint64_t i = seq & c->mask;
    int64_t t_sent = c->ring[i].t_ns;
    uint32_t o = 0;
    if (!settle(c, seq, &o))
        return true; /* already counted as a timeout */
    c->replies++;
    int kind = 0;
    Cms__V1__Reply *r = NULL;
    Cms__V1__ReportReply *a = NULL;
    if (hdr_len >= 12 && memcmp(hdr, "NATS/1.0 503", 12) == 0) {
        kind = OUT_NO_RESPONDERS;
        bench_nats_error(c->nats, "no responders on %s", b->subject);
    } else if ((r = cms__v1__reply__unpack(NULL, len, (const uint8_t *)data)) == NULL ||
               r->outcome_case == CMS__V1__REPLY__OUTCOME__NOT_SET ||
               (r->outcome_case == CMS__V1__REPLY__OUTCOME_ERROR && r->error == NULL)) {
        kind = OUT_BAD_REPLY;
        bench_nats_error(c->nats, "a reply that is not a cms.v1.Reply with an outcome (%zu bytes)",
                         len);
    } else if (r->outcome_case == CMS__V1__REPLY__OUTCOME_ERROR) {
        int code = (int)r->error->code;
        kind = code >= 1 && code < OUT_NO_RESPONDERS ? code : OUT_BAD_REPLY;
        bench_nats_error(c->nats, "report: %s: %s%s%s%s", cms_cmd_code_name(r->error->code),
                         r->error->message, r->error->field[0] ? " (field " : "", r->error->field,
                         r->error->field[0] ? ")" : "");
    } else if ((a = cms__v1__report_reply__unpack(NULL, r->result.len, r->result.data)) == NULL) {
        kind = OUT_BAD_REPLY;
        bench_nats_error(c->nats, "report: the result is not a cms.v1.ReportReply");
    } else if (a->stop) {
        kind = OUT_STOP;
        bench_nats_error(c->nats, "report: the job is told to stop: %s", a->reason);
    }
    if (a)
        cms__v1__report_reply__free_unpacked(a, NULL);
    if (r)
        cms__v1__reply__free_unpacked(r, NULL);
    if (kind != 0) {
        count_error(c, kind);
    } else {
        atomic_fetch_add_explicit(&c->done_all, 1, memory_order_relaxed);
        if (measured(b, t_sent)) {
            bench_hist_add(c->lat, t_now - t_sent);
            c->ok++;
        }
    }
    return next_report(c, o, t_now);
}

/* Times out what has waited longer than the timeout (everything, if
 * force), oldest first; in the closed loop its owner sends the next. */
static bool sweep(conn *c, int64_t now, bool force)
{
    bench *b = c->b;
    while (c->sweep_seq < c->next_seq) {
        uint64_t s = c->sweep_seq + 1;
        slot *sl = &c->ring[s & c->mask];
        if (sl->seq == s) {
            if (!force && now - sl->t_ns < b->timeout_ns)
                break;
            uint32_t o = 0;
            settle(c, s, &o);
            bench_nats_error(c->nats, "report: no reply in %" PRId64 " ms",
                             b->timeout_ns / 1000000);
            count_error(c, OUT_TIMEOUT);
            if (!force && !next_report(c, o, now))
                return false;
        }
        c->sweep_seq = s;
    }
    return true;
}

/* The open loop's schedule: report g (over all connections) is due at g /
 * rate and goes at the first tick at or after that; connection i sends
 * reports i, i + nconns, ... */
static int64_t next_send_time(const conn *c)
{
    const bench *b = c->b;
    unsigned __int128 g = (unsigned __int128)c->due * (unsigned)b->nconns + (unsigned)c->index;
    unsigned __int128 per = (unsigned __int128)b->rate * (uint64_t)b->tick_ns;
    uint64_t tick = (uint64_t)((g * 1000000000u + per - 1) / per);
    return b->t0 + (int64_t)tick * b->tick_ns;
}

static void *worker(void *arg)
{
    conn *c = arg;
    bench *b = c->b;
    (void)prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    bench_sleep_until_ns(b->t0);
    int64_t now = bench_mono_ns(), next_sweep = now + SWEEP_NS;
    if (b->closed)
        for (uint32_t o = 0; o < c->nowners; o++)
            if (!queue_report(c, o, now))
                goto fail;
    for (;;) {
        now = bench_mono_ns();
        bool sending = now < b->t_end;
        if (!b->closed && sending) {
            for (int64_t t = next_send_time(c); t <= now && t < b->t_end; t = next_send_time(c)) {
                if (measured(b, t))
                    bench_hist_add(c->send_lag, now - t);
                c->due++;
                if (!queue_report(c, 0, t))
                    goto fail;
            }
        }
        if (!bench_nats_flush(c->nats))
            goto fail;
        if (now >= next_sweep) {
            if (!sweep(c, now, false))
                goto fail;
            next_sweep = now + SWEEP_NS;
        }
        if (!sending && c->in_flight == 0)
            break;
        if (!sending && now >= b->t_end + 2 * b->timeout_ns) {
            (void)sweep(c, now, true);
            break;
        }
        int64_t wake = next_sweep;
        if (sending && !b->closed && next_send_time(c) < wake)
            wake = next_send_time(c);
        if (sending && b->t_end < wake)
            wake = b->t_end;
        if (!bench_nats_poll(c->nats, wake - now))
            goto fail;
    }
    atomic_fetch_sub(&b->running, 1);
    return NULL;
fail:
    c->failed = true;
    atomic_fetch_sub(&b->running, 1);
    return NULL;
}

static bool conn_open(bench *b, conn *c, int index, const char *url, uint64_t ring)
{
    c->b = b;
    c->index = index;
    c->mask = ring - 1;
    if (!bench_nats_create(&c->nats))
        return false;
    c->ring = calloc(ring, sizeof *c->ring);
    c->lat = calloc(1, sizeof *c->lat);
    c->send_lag = calloc(1, sizeof *c->send_lag);
    c->owners = calloc(c->nowners ? c->nowners : 1, sizeof *c->owners);
    if (!c->ring || !c->lat || !c->send_lag || !c->owners) {
        bench_nats_error(c->nats, "out of memory");
        return false;
    }
    return bench_nats_connect(c->nats, PROG, index, url, on_reply, c);
}

static void conn_free(conn *c)
{
    bench_nats_destroy(c->nats);
    c->nats = NULL;
    free(c->ring);
    free(c->lat);
    free(c->send_lag);
    free(c->owners);
}

/* Once a second until the workers are done: reports answered in that
 * second and errors so far, on one line of stderr. */
static void progress(bench *b)
{
    uint64_t last = 0;
    int64_t t = b->t0;
    while (atomic_load(&b->running) > 0) {
        int64_t next = t + 1000000000;
        while (atomic_load(&b->running) > 0 && bench_mono_ns() < next)
            bench_sleep_until_ns(bench_mono_ns() + 50000000 < next ? bench_mono_ns() + 50000000
                                                                   : next);
        uint64_t done = 0, errors = 0;
        for (int i = 0; i < b->nconns; i++) {
            done += atomic_load_explicit(&b->conns[i].done_all, memory_order_relaxed);
            errors += atomic_load_explicit(&b->conns[i].errors_all, memory_order_relaxed);
        }
        int64_t now = bench_mono_ns();
        const char *phase = now < b->t_measure ? "warm-up"
                            : now < b->t_end   ? "measuring"
                                               : "draining";
        fprintf(stderr,
                "\r  %5.1f s  %-9s  %7" PRIu64 " reports/s  %9" PRIu64 " done  %6" PRIu64
                " errors ",
                (double)(now - b->t0) / 1e9, phase, done - last, done, errors);
        fflush(stderr);
        last = done;
        t = next;
    }
    fprintf(stderr, "\r%*s\r", 78, "");
    fflush(stderr);
}

static void print_hist(const char *name, const bench_hist *h)
{
    printf("%s_n: %" PRIu64 "\n", name, h->n);
    printf("%s_p50_us: %" PRIu64 "\n", name, bench_hist_quantile(h, 0.50));
    printf("%s_p90_us: %" PRIu64 "\n", name, bench_hist_quantile(h, 0.90));
    printf("%s_p99_us: %" PRIu64 "\n", name, bench_hist_quantile(h, 0.99));
    printf("%s_p999_us: %" PRIu64 "\n", name, bench_hist_quantile(h, 0.999));
    printf("%s_max_us: %" PRIu64 "\n", name, h->max_us);
    printf("%s_mean_us: %.0f\n", name, bench_hist_mean_us(h));
}

static int cmd_run(const cms_config *cfg)
{
    int status = EXIT_FAILED;
    bench b = {0};
    parties ps = {0};
    job *jobs = NULL;
    size_t njobs = 0;
    bench_hist *lat = NULL, *lag = NULL;
    const char *url = cms_config_str(cfg, "nats-url");
    int64_t clients = cms_config_int(cfg, "clients");
    int64_t rate = cms_config_int(cfg, "rate");
    int64_t nconns = cms_config_int(cfg, "connections");
    int64_t seconds = cms_config_int(cfg, "seconds");
    int64_t tick_us = cms_config_int(cfg, "tick-us");
    int64_t warmup_ms = cms_config_duration_ms(cfg, "warmup");
    int64_t timeout_ms = cms_config_duration_ms(cfg, "timeout");
    int64_t first_step = cms_config_int(cfg, "first-step");

    if (rate < 0 || rate > 1000000 || clients < 1 || clients > 100000 || nconns < 1 ||
        nconns > 64 || seconds < 1 || seconds > 86400 || warmup_ms < 0 || timeout_ms < 1 ||
        tick_us < 1 || tick_us > 1000000 || first_step < 1) {
        fprintf(stderr, PROG ": --rate 0..1000000, --clients 1..100000, --connections 1..64, "
                             "--seconds 1..86400, --warmup >= 0, --timeout >= 1ms, --tick-us "
                             "1..1000000, --first-step >= 1\n");
        status = EXIT_USAGE;
        goto out;
    }
    if (!parties_load(cfg, &ps) ||
        !jobs_load(cms_config_str(cfg, "jobs-file"), NWORKERS(&ps), &jobs, &njobs))
        goto out;
    b.closed = rate == 0;
    if (b.closed && clients < nconns)
        nconns = clients;
    b.nowners = (uint32_t)(b.closed ? clients : nconns);
    if (njobs < b.nowners) {
        fprintf(stderr,
                PROG ": %zu jobs for %u %s: each needs one of its own (more --jobs at start)\n",
                njobs, b.nowners, b.closed ? "clients" : "connections");
        status = EXIT_USAGE;
        goto out;
    }
    int n =
        snprintf(b.subject, sizeof b.subject, "%s.training.report", cms_config_str(cfg, "prefix"));
    if (n < 0 || (size_t)n >= sizeof b.subject) {
        fprintf(stderr, PROG ": --prefix is too long\n");
        status = EXIT_USAGE;
        goto out;
    }
    for (size_t i = 0; i < njobs; i++)
        jobs[i].step = first_step - 1;
    b.ps = &ps;
    b.jobs = jobs;
    b.njobs = (uint32_t)njobs;
    b.batch = cms_config_int(cfg, "batch-size");
    b.rate = rate;
    b.tick_ns = tick_us * 1000;
    b.timeout_ns = timeout_ms * 1000000;

    /* twice the reports that can be sent before the sweeper times one out */
    uint64_t per_conn_rate = b.closed ? 250000 : (uint64_t)(rate / nconns + 1);
    uint64_t ring =
        bench_pow2_at_least(2 * per_conn_rate * (uint64_t)(timeout_ms / 1000 + 1) + 4096);
    b.nconns = (int)nconns;
    b.conns = calloc((size_t)nconns, sizeof *b.conns);
    if (b.conns == NULL)
        goto out;
    uint32_t owner0 = 0;
    for (int i = 0; i < b.nconns; i++) {
        conn *c = &b.conns[i];
        c->nowners = b.closed ? (uint32_t)(clients / nconns + (i < clients % nconns ? 1 : 0)) : 1;
        if (!conn_open(&b, c, i, url, ring)) {
            fprintf(stderr, PROG ": %s\n",
                    c->nats ? bench_nats_first_error(c->nats) : "out of memory");
            goto out;
        }
        for (uint32_t o = 0; o < c->nowners; o++)
            c->owners[o].index = b.closed ? owner0 + o : (uint32_t)i;
        owner0 += c->nowners;
    }

    double cpu0 = bench_cpu_seconds();
    b.t0 = bench_mono_ns() + 20000000;
    b.t_measure = b.t0 + warmup_ms * 1000000;
    b.t_end = b.t_measure + seconds * 1000000000;
    atomic_store(&b.running, b.nconns);
    for (int i = 0; i < b.nconns; i++) {
        if (pthread_create(&b.conns[i].thread, NULL, worker, &b.conns[i]) != 0) {
            fprintf(stderr, PROG ": cannot start a thread\n");
            atomic_fetch_sub(&b.running, b.nconns - i);
            goto out;
        }
        b.conns[i].started = true;
    }
    if (cms_config_bool(cfg, "progress"))
        progress(&b);
    for (int i = 0; i < b.nconns; i++) {
        pthread_join(b.conns[i].thread, NULL);
        b.conns[i].started = false;
    }
    double cpu = bench_cpu_seconds() - cpu0;
    double secs = (double)(b.t_end - b.t_measure) / 1e9;

    lat = calloc(1, sizeof *lat);
    lag = calloc(1, sizeof *lag);
    if (lat == NULL || lag == NULL)
        goto out;
    uint64_t sent = 0, replies = 0, ok = 0, errors = 0, out_counts[OUT_KINDS] = {0};
    int64_t max_step = 0;
    bool failed = false;
    const char *first_error = "";
    for (int i = 0; i < b.nconns; i++) {
        conn *c = &b.conns[i];
        bench_hist_merge(lat, c->lat);
        bench_hist_merge(lag, c->send_lag);
        sent += c->sent;
        replies += c->replies;
        ok += c->ok;
        for (int k = 1; k < OUT_KINDS; k++)
            out_counts[k] += c->out[k];
        if (c->max_step > max_step)
            max_step = c->max_step;
        failed = failed || c->failed;
        if (first_error[0] == '\0')
            first_error = bench_nats_first_error(c->nats);
    }
    for (int k = 1; k < OUT_KINDS; k++)
        errors += out_counts[k];

    printf("subject: %s\n", b.subject);
    printf("mode: %s\n", b.closed ? "closed" : "open");
    printf("rate: %" PRId64 "\n", rate);
    printf("clients: %" PRId64 "\n", b.closed ? clients : 0);
    printf("connections: %" PRId64 "\n", nconns);
    printf("jobs: %zu\n", njobs);
    printf("seconds: %.3f\n", secs);
    printf("sent: %" PRIu64 "\n", sent);
    printf("replies: %" PRIu64 "\n", replies);
    printf("reports: %" PRIu64 "\n", ok);
    printf("throughput: %.0f\n", secs > 0 ? (double)ok / secs : 0.0);
    printf("errors: %" PRIu64 "\n", errors);
    printf("timeouts: %" PRIu64 "\n", out_counts[OUT_TIMEOUT]);
    print_hist("report", lat);
    if (!b.closed)
        printf("send_lag_p99_us: %" PRIu64 "\n", bench_hist_quantile(lag, 0.99));
    printf("max_step: %" PRId64 "\n", max_step);
    printf("cpu_s: %.2f\n", cpu);
    for (int k = 1; k < OUT_KINDS; k++)
        if (out_counts[k])
            printf("error_%s: %" PRIu64 "\n", outcome_name(k), out_counts[k]);
    if (first_error[0])
        printf("first_error: %s\n", first_error);
    if (failed)
        printf("failed: the connection to nats-server broke\n");
    status = errors == 0 && ok > 0 && !failed ? EXIT_DONE : EXIT_FAILED;
out:
    if (b.conns) {
        for (int i = 0; i < b.nconns; i++)
            if (b.conns[i].started)
                pthread_join(b.conns[i].thread, NULL);
        for (int i = 0; i < b.nconns; i++)
            conn_free(&b.conns[i]);
    }
    free(b.conns);
    free(lat);
    free(lag);
    free(jobs);
    parties_free(&ps);
    return status;
}

/* --- respond ------------------------------------------------------------------ */

typedef struct responder {
    bench_body reply;
    _Atomic uint64_t replied, failed;
} responder;

static void on_request(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)sub;
    responder *r = closure;
    const char *reply = natsMsg_GetReply(msg);
    if (reply && natsConnection_Publish(nc, reply, r->reply.data, (int)r->reply.len) == NATS_OK)
        atomic_fetch_add_explicit(&r->replied, 1, memory_order_relaxed);
    else
        atomic_fetch_add_explicit(&r->failed, 1, memory_order_relaxed);
    natsMsg_Destroy(msg);
}

static int cmd_respond(const cms_config *cfg)
{
    int status = EXIT_FAILED;
    responder r = {0};
    char subject[256];
    /* what cms-training answers a progress report of a job that goes on */
    Cms__V1__ReportReply a = CMS__V1__REPORT_REPLY__INIT;
    a.stop = false;
    a.reason = (char *)"";
    a.max_steps = 10000000;
    a.privacy_budget_spent = 1.2345678901234567;
    if (!bench_pack_reply(&a.base, &r.reply))
        goto out;
    snprintf(subject, sizeof subject, "%s.training.*", cms_config_str(cfg, "prefix"));
    if (bench_serve(PROG, cms_config_str(cfg, "nats-url"), subject,
                    cms_config_bool(cfg, "buffered"), on_request, &r))
        status = EXIT_DONE;
out:
    if (status == EXIT_DONE)
        printf("replied: %" PRIu64 "\nfailed: %" PRIu64 "\n", atomic_load(&r.replied),
               atomic_load(&r.failed));
    free(r.reply.data);
    return status;
}

/* --- e2e ---------------------------------------------------------------------- */

/* Where a submit of e2e is. One answered UNAVAILABLE (the service asks for
 * a retry: its queue is full, or the contract's ledger kept changing under
 * the submit) waits a jittered backoff, then goes again. sub_set_state()
 * is the one place it changes. */
typedef enum { SUB_UNSENT, SUB_IN_FLIGHT, SUB_BACKOFF, SUB_DONE } sub_state;

typedef struct submit {
    sub_state state;
    int tries;
    int64_t t_sent, t_retry;
    char id[CMS_UUID_STRLEN + 1];
} submit;

#define SUBMIT_TRIES 50
#define BACKOFF_MIN_NS 10000000LL /* 10 ms, doubling to 1 s */
#define BACKOFF_MAX_NS 1000000000LL

/* The submits of e2e, in the order of the job ids (request seq is submit
 * index + 1). */
typedef struct e2e {
    submit *subs;
    uint64_t n, done;
    int64_t in_flight;
    uint64_t retries;
    bench_nats *nats;
} e2e;

static void sub_set_state(e2e *e, submit *sb, sub_state to, int64_t now)
{
    if (sb->state == SUB_IN_FLIGHT)
        e->in_flight--;
    switch (to) {
    case SUB_IN_FLIGHT:
        e->in_flight++;
        sb->tries++;
        sb->t_sent = now;
        break;
    case SUB_BACKOFF: {
        int shift = sb->tries < 7 ? sb->tries : 7;
        int64_t d = BACKOFF_MIN_NS << shift;
        if (d > BACKOFF_MAX_NS)
            d = BACKOFF_MAX_NS;
        sb->t_retry = now + d / 2 + (int64_t)randombytes_uniform((uint32_t)(d / 2000)) * 1000;
        e->retries++;
        break;
    }
    case SUB_DONE:
        e->done++;
        break;
    case SUB_UNSENT:
        break;
    }
    sb->state = to;
}

static bool on_submitted(void *arg, uint64_t seq, const char *hdr, size_t hdr_len, const char *data,
                         size_t len, int64_t t_now)
{
    e2e *e = arg;
    if (seq == 0 || seq > e->n || e->subs[seq - 1].state != SUB_IN_FLIGHT)
        return true;
    submit *sb = &e->subs[seq - 1];
    Cms__V1__Reply *r = NULL;
    Cms__V1__TrainingJob *j = NULL;
    bool ok = false, again = false;
    if (hdr_len >= 12 && memcmp(hdr, "NATS/1.0 503", 12) == 0)
        bench_nats_error(e->nats, "no responders on the submit subject: is cms-training up?");
    else if ((r = cms__v1__reply__unpack(NULL, len, (const uint8_t *)data)) == NULL)
        bench_nats_error(e->nats, "submit: the reply is not a cms.v1.Reply");
    else if (r->outcome_case == CMS__V1__REPLY__OUTCOME_ERROR && r->error &&
             r->error->code == CMS__V1__ERROR_CODE__UNAVAILABLE && sb->tries < SUBMIT_TRIES)
        again = true;
    else if (r->outcome_case == CMS__V1__REPLY__OUTCOME_ERROR && r->error)
        bench_nats_error(e->nats, "submit: %s: %s (field %s), after %d tries",
                         cms_cmd_code_name(r->error->code), r->error->message, r->error->field,
                         sb->tries);
    else if (r->outcome_case != CMS__V1__REPLY__OUTCOME_RESULT ||
             (j = cms__v1__training_job__unpack(NULL, r->result.len, r->result.data)) == NULL ||
             strlen(j->id) != CMS_UUID_STRLEN)
        bench_nats_error(e->nats, "submit: the result is not a cms.v1.TrainingJob");
    else
        ok = true;
    if (ok)
        memcpy(sb->id, j->id, CMS_UUID_STRLEN + 1);
    if (j)
        cms__v1__training_job__free_unpacked(j, NULL);
    if (r)
        cms__v1__reply__free_unpacked(r, NULL);
    if (ok)
        sub_set_state(e, sb, SUB_DONE, t_now);
    else if (again)
        sub_set_state(e, sb, SUB_BACKOFF, t_now);
    return ok || again;
}

/* "{id,id,...}": the jobs as a uuid[] literal; the caller frees it. */
static char *id_array(const e2e *e)
{
    char *s = malloc(e->n * (CMS_UUID_STRLEN + 1) + 3);
    if (s == NULL)
        return NULL;
    size_t k = 0;
    s[k++] = '{';
    for (uint64_t i = 0; i < e->n; i++) {
        if (i)
            s[k++] = ',';
        memcpy(s + k, e->subs[i].id, CMS_UUID_STRLEN);
        k += CMS_UUID_STRLEN;
    }
    s[k++] = '}';
    s[k] = '\0';
    return s;
}

/* The counts of the jobs: completed, ended otherwise, still open. */
static bool e2e_counts(PGconn *pg, const char *ids, int64_t v[3])
{
    const char *p[] = {ids};
    PGresult *r = PQexecParams(pg,
                               "SELECT count(*) FILTER (WHERE status = 'completed'), "
                               "count(*) FILTER (WHERE status IN ('failed', 'stopped')), "
                               "count(*) FILTER (WHERE status IN ('pending', 'running')) "
                               "FROM training_jobs WHERE id = ANY($1::uuid[])",
                               1, NULL, p, NULL, NULL, 0);
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    if (ok)
        for (int i = 0; i < 3; i++)
            v[i] = strtoll(PQgetvalue(r, 0, i), NULL, 10);
    else
        fprintf(stderr, PROG ": reading the jobs: %s", PQerrorMessage(pg));
    PQclear(r);
    return ok;
}

/* The jobs' times from the database, in ms: queued (created to started),
 * run (started to completed), total; and one failure. */
static void e2e_times(PGconn *pg, const char *ids)
{
    const char *p[] = {ids};
    PGresult *r = PQexecParams(
        pg,
        "WITH t AS (SELECT 1000 * extract(epoch FROM started_at - created_at) AS q, "
        "1000 * extract(epoch FROM completed_at - started_at) AS w, "
        "1000 * extract(epoch FROM completed_at - created_at) AS a, created_at, completed_at "
        "FROM training_jobs WHERE id = ANY($1::uuid[]) AND status = 'completed') "
        "SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY q)::numeric, 1), "
        "round(percentile_cont(0.99) WITHIN GROUP (ORDER BY q)::numeric, 1), "
        "round(percentile_cont(0.5) WITHIN GROUP (ORDER BY w)::numeric, 1), "
        "round(percentile_cont(0.99) WITHIN GROUP (ORDER BY w)::numeric, 1), "
        "round(percentile_cont(0.5) WITHIN GROUP (ORDER BY a)::numeric, 1), "
        "round(percentile_cont(0.99) WITHIN GROUP (ORDER BY a)::numeric, 1), "
        "round((1000 * extract(epoch FROM max(completed_at) - min(created_at)))::numeric, 1), "
        "(SELECT failure FROM training_jobs WHERE id = ANY($1::uuid[]) AND status <> "
        "'completed' AND failure IS NOT NULL LIMIT 1) FROM t",
        1, NULL, p, NULL, NULL, 0);
    static const char *const names[] = {"queued_p50_ms",  "queued_p99_ms", "run_p50_ms",
                                        "run_p99_ms",     "job_p50_ms",    "job_p99_ms",
                                        "db_makespan_ms", "first_failure"};
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
        for (int i = 0; i < 8; i++)
            if (!PQgetisnull(r, 0, i))
                printf("%s: %s\n", names[i], PQgetvalue(r, 0, i));
    } else {
        fprintf(stderr, PROG ": reading the jobs' times: %s", PQerrorMessage(pg));
    }
    PQclear(r);
}

static int cmd_e2e(const cms_config *cfg)
{
    int status = EXIT_FAILED;
    parties ps = {0};
    e2e e = {0};
    PGconn *pg = NULL;
    char *ids = NULL;
    char contract[CMS_UUID_STRLEN + 1], config[1024], subject[256];
    double budget = 0;
    int64_t njobs = cms_config_int(cfg, "jobs"), window = cms_config_int(cfg, "in-flight");
    int64_t timeout_ns = cms_config_duration_ms(cfg, "timeout") * 1000000;
    int64_t poll_ns = cms_config_duration_ms(cfg, "poll") * 1000000;
    int64_t limit_ns = cms_config_duration_ms(cfg, "e2e-timeout") * 1000000;
    const char *dburl = cms_config_str(cfg, "database-url");
    bool show = cms_config_bool(cfg, "progress");
    if (dburl == NULL || njobs < 1 || njobs > 1000000 || window < 1 || window > 10000 ||
        poll_ns < 1000000) {
        fprintf(stderr, PROG ": e2e needs --database-url, --jobs 1..1000000, --in-flight "
                             "1..10000 and --poll >= 1ms\n");
        status = EXIT_USAGE;
        goto out;
    }
    if (!job_config(cfg, config, sizeof config, &budget)) {
        status = EXIT_USAGE;
        goto out;
    }
    if (!parties_load(cfg, &ps) || !read_id(cms_config_str(cfg, "contract-file"), contract))
        goto out;
    pg = PQconnectdb(dburl);
    if (PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, PROG ": connecting to the database: %s", PQerrorMessage(pg));
        goto out;
    }
    e.n = (uint64_t)njobs;
    e.subs = calloc(e.n, sizeof *e.subs);
    if (e.subs == NULL || !bench_nats_create(&e.nats))
        goto out;
    if (!bench_nats_connect(e.nats, PROG, 0, cms_config_str(cfg, "nats-url"), on_submitted, &e)) {
        fprintf(stderr, PROG ": %s\n", bench_nats_first_error(e.nats));
        goto out;
    }
    snprintf(subject, sizeof subject, "%s.training.submit", cms_config_str(cfg, "prefix"));
    Cms__V1__SubmitJob m = CMS__V1__SUBMIT_JOB__INIT;
    m.model_name = (char *)"";
    m.contract_id = contract;
    m.config_json = config;
    m.privacy_budget = budget;
    uint8_t body[2048];
    size_t blen = cms__v1__submit_job__get_packed_size(&m);
    if (blen > sizeof body)
        goto out;
    cms__v1__submit_job__pack(&m, body);

    /* the submits, --in-flight at once, in order, a retry before a first try */
    int64_t t0 = bench_mono_ns(), t_submitted = 0;
    uint64_t next = 0;
    while (e.done < e.n) {
        int64_t now = bench_mono_ns();
        for (uint64_t i = 0; i < next; i++)
            if (e.subs[i].state == SUB_IN_FLIGHT && now - e.subs[i].t_sent > timeout_ns) {
                bench_nats_error(e.nats, "submit %" PRIu64 ": no reply in %" PRId64 " ms", i + 1,
                                 timeout_ns / 1000000);
                goto broke;
            }
        for (uint64_t i = 0; i < e.n && e.in_flight < window; i++) {
            submit *sb = &e.subs[i];
            if (sb->state == SUB_UNSENT && i != next)
                break;
            if (sb->state != SUB_UNSENT && (sb->state != SUB_BACKOFF || now < sb->t_retry))
                continue;
            if (sb->state == SUB_UNSENT)
                next++;
            sub_set_state(&e, sb, SUB_IN_FLIGHT, now);
            if (!bench_nats_publish(e.nats, subject, i + 1, CONSUMER(&ps)->hdr,
                                    CONSUMER(&ps)->hdr_len, body, blen))
                goto broke;
        }
        if (!bench_nats_flush(e.nats) || !bench_nats_poll(e.nats, 2000000))
            goto broke;
    }
    t_submitted = bench_mono_ns();

    /* the jobs' ends, read from the database */
    if ((ids = id_array(&e)) == NULL)
        goto out;
    int64_t v[3] = {0, 0, (int64_t)e.n}, t_done = 0, next_show = t_submitted + 1000000000;
    for (;;) {
        if (!e2e_counts(pg, ids, v))
            goto out;
        int64_t now = bench_mono_ns();
        if (v[2] == 0) {
            t_done = now;
            break;
        }
        if (now - t0 > limit_ns) {
            fprintf(stderr, PROG ": %" PRId64 " of %" PRIu64 " jobs still open after %.0f s\n",
                    v[2], e.n, (double)limit_ns / 1e9);
            break;
        }
        if (show && now >= next_show) {
            fprintf(stderr,
                    "\r  %6.1f s  %6" PRId64 " completed  %4" PRId64 " failed  %6" PRId64 " open ",
                    (double)(now - t0) / 1e9, v[0], v[1], v[2]);
            fflush(stderr);
            next_show += 1000000000;
        }
        bench_sleep_until_ns(now + poll_ns);
    }
    if (show)
        fprintf(stderr, "\r%*s\r", 78, "");
    printf("jobs: %" PRIu64 "\n", e.n);
    printf("completed: %" PRId64 "\nended_otherwise: %" PRId64 "\nopen: %" PRId64 "\n", v[0], v[1],
           v[2]);
    printf("submit_s: %.3f\n", (double)(t_submitted - t0) / 1e9);
    printf("submit_retries: %" PRIu64 "\n", e.retries);
    printf("submit_rate: %.0f\n", (double)e.n * 1e9 / (double)(t_submitted - t0));
    if (t_done) {
        printf("e2e_s: %.3f\n", (double)(t_done - t0) / 1e9);
        printf("drain_s: %.3f\n", (double)(t_done - t_submitted) / 1e9);
        printf("jobs_per_s: %.1f\n", (double)e.n * 1e9 / (double)(t_done - t0));
    }
    e2e_times(pg, ids);
    status = v[0] == (int64_t)e.n ? EXIT_DONE : EXIT_FAILED;
    goto out;
broke:
    fprintf(stderr, PROG ": %s\n", bench_nats_first_error(e.nats));
out:
    bench_nats_destroy(e.nats);
    free(e.subs);
    free(ids);
    PQfinish(pg);
    parties_free(&ps);
    return status;
}

/* --- main --------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    static const bench_verb verbs[] = {
        {"rdp", cmd_rdp}, {"setup", cmd_setup},   {"contract", cmd_contract}, {"start", cmd_start},
        {"run", cmd_run}, {"finish", cmd_finish}, {"respond", cmd_respond},   {"e2e", cmd_e2e}};
    return bench_main(argc, argv, PROG, "load generator of the cms-training benchmark", options,
                      sizeof options / sizeof options[0], usage_tail, verbs,
                      sizeof verbs / sizeof verbs[0]);
}
