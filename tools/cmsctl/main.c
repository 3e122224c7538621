/* cmsctl: the operator's command line for the contract management system.
 * One verb per command (cmsctl [shared options] VERB [options]); each verb
 * has its own --help. It owns no data: it reads the audit log, writes,
 * records and replays event streams, and sends commands to the services.
 *
 * The options the verbs share (below) may come before the verb too; they
 * are handed to the verb as if written right after it, so the verb checks
 * them and the same option after the verb wins.
 *
 * Exit status: 0 done, 1 failed, 2 usage error. */
#include <nats/nats.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "ctlout.h"
#include "log.h"
#include "verbs.h"

#define PROG "cmsctl"

static const char overall_help[] =
    "cmsctl - command line of the contract management system\n"
    "\n"
    "usage: cmsctl [shared options] VERB [options] [args]\n"
    "       cmsctl VERB --help\n"
    "\n"
    "verbs:\n"
    "  gen           write synthetic events (optionally with poison) to a .pbs file\n"
    "  record        capture live events from NATS into a .pbs file\n"
    "  replay        publish the events of a .pbs file to JetStream (CMS_EVENTS)\n"
    "  audit query   read the audit log, filtered, with keyset pagination\n"
    "  identity      create, get, list, suspend, activate, deactivate identities\n"
    "  credential    issue, revoke, list the credentials of identities\n"
    "  whoami        who the API key belongs to (asks cms-identity)\n"
    "  contract      create, sign, list, export contracts (keygen, verify offline),\n"
    "                show a contract's privacy ledger (budget)\n"
    "  job           submit, cancel, get, list, watch training jobs and their metrics\n"
    "  privacy       epsilon, sigma or steps of DP-SGD training (offline)\n"
    "  version       print the version\n"
    "\n"
    "shared options (before or after the verb; a verb takes those it uses):\n"
    "  -o, --output table|json|ndjson\n"
    "                table (default); json: one document, an object for one item, an\n"
    "                array for a list; ndjson: one compact object per line\n"
    "  --json        the same as -o json\n"
    "  --timeout D   longest wait for a connection, a reply or a statement (10s, 500ms)\n"
    "  --nats-url URL, --command-prefix P, --database-url CONNINFO\n"
    "                where NATS, the command subjects and PostgreSQL are (also\n"
    "                CMS_NATS_URL, CMS_COMMAND_PREFIX, CMS_DATABASE_URL)\n"
    "  --nats-creds FILE, --nats-inbox-prefix P, --nats-tls, --nats-ca FILE,\n"
    "  --nats-cert FILE, --nats-key FILE\n"
    "                NATS credentials (a .creds file or USER:PASSWORD, mode 600) and\n"
    "                TLS (also CMS_NATS_CREDS or NATS_CREDS, CMS_NATS_INBOX_PREFIX,\n"
    "                CMS_NATS_TLS, CMS_NATS_CA or NATS_CA, CMS_NATS_CERT, CMS_NATS_KEY);\n"
    "                without them ~/.config/cms/nats.creds and ~/.config/cms/nats-ca.crt\n"
    "                are used if they exist (deploy/local/up installs them)\n"
    "\n"
    "Only results go to stdout; \"no results\" notes, progress and, with -o json or\n"
    "ndjson, the \"next: --after CURSOR\" line of a page go to stderr.\n"
    "\n"
    "A .pbs file is a sequence of protobuf messages (cms.v1.Envelope), each preceded by\n"
    "its length as a varint, as protobuf's writeDelimitedTo writes them.\n"
    "\n"
    "The identity, credential and whoami verbs send commands to cms-identity, contract\n"
    "to cms-contracts (but for keygen and verify, which work offline, and budget), job\n"
    "and contract budget to cms-training, audit query to cms-audit, with the API key\n"
    "from CMS_API_KEY, else the file CMS_CREDENTIALS_FILE names, else\n"
    "~/.config/cms/credentials. Exit status: 0 done, 1 failed, 2 usage error.\n";

/* The options the verbs share, accepted before the verb. */
typedef struct shared_option {
    const char *name;
    bool takes_value;
} shared_option;

static const shared_option shared[] = {
    {"output", true},         {"json", false},
    {"timeout", true},        {"nats-url", true},
    {"command-prefix", true}, {"database-url", true},
    {"nats-creds", true},     {"nats-inbox-prefix", true},
    {"nats-tls", false},      {"nats-ca", true},
    {"nats-cert", true},      {"nats-key", true},
};

static const shared_option *find_shared(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof shared / sizeof shared[0]; i++) {
        if (strlen(shared[i].name) == len && memcmp(shared[i].name, name, len) == 0)
            return &shared[i];
    }
    return NULL;
}

static const cms_option version_options[] = {
    CMSCTL_OUT_OPTIONS,
};

int cmsctl_version_main(int argc, char **argv)
{
    static const char prog[] = "cmsctl version";
    cms_config *cfg = NULL;
    cmsctl_out_format fmt = CMSCTL_OUT_TABLE;
    int status =
        cmsctl_parse(version_options, sizeof version_options / sizeof version_options[0], argc,
                     argv, prog, "print the version of cmsctl",
                     "\n\nPrints \"cmsctl VERSION\", as cmsctl --version does, or with -o json "
                     "{\"name\": \"cmsctl\", \"version\": VERSION}.",
                     &cfg);
    if (status != CMSCTL_EXIT_OK)
        goto out;
    if (cms_config_npositional(cfg) > 0) {
        status = cmsctl_usage(prog, "unexpected argument \"%s\"", cms_config_positional(cfg, 0));
        goto out;
    }
    if ((status = cmsctl_out_format_get(prog, cfg, &fmt)) != CMSCTL_EXIT_OK)
        goto out;
    if (fmt == CMSCTL_OUT_TABLE) {
        printf("%s %s\n", PROG, CMS_VERSION);
    } else {
        json_t *o = json_pack("{s:s, s:s}", "name", PROG, "version", CMS_VERSION);
        status = cmsctl_out_emit(prog, fmt, o, NULL);
    }
out:
    cms_config_destroy(cfg);
    return status == CMSCTL_PARSE_DONE ? CMSCTL_EXIT_OK : status;
}

/* Runs the verb argv[0] with argc/argv (argv[0] is the verb). */
static int run_verb(int argc, char **argv)
{
    const char *verb = argv[0];
    if (strcmp(verb, "gen") == 0)
        return cmsctl_gen_main(argc, argv);
    if (strcmp(verb, "record") == 0)
        return cmsctl_record_main(argc, argv);
    if (strcmp(verb, "replay") == 0)
        return cmsctl_replay_main(argc, argv);
    if (strcmp(verb, "audit") == 0)
        return cmsctl_audit_main(argc, argv);
    if (strcmp(verb, "identity") == 0)
        return cmsctl_identity_main(argc, argv);
    if (strcmp(verb, "credential") == 0)
        return cmsctl_credential_main(argc, argv);
    if (strcmp(verb, "whoami") == 0)
        return cmsctl_whoami_main(argc, argv);
    if (strcmp(verb, "contract") == 0)
        return cmsctl_contract_main(argc, argv);
    if (strcmp(verb, "job") == 0)
        return cmsctl_job_main(argc, argv);
    if (strcmp(verb, "privacy") == 0)
        return cmsctl_privacy_main(argc, argv);
    if (strcmp(verb, "version") == 0)
        return cmsctl_version_main(argc, argv);
    return cmsctl_usage(PROG,
                        "unknown verb \"%s\": want gen, record, replay, audit, identity, "
                        "credential, whoami, contract, job, privacy or version",
                        verb);
}

/* The verbs whose second word names what to do (cmsctl identity list). */
static bool has_sub_verb(const char *verb)
{
    return strcmp(verb, "audit") == 0 || strcmp(verb, "identity") == 0 ||
           strcmp(verb, "credential") == 0 || strcmp(verb, "contract") == 0 ||
           strcmp(verb, "job") == 0 || strcmp(verb, "privacy") == 0;
}

int main(int argc, char **argv)
{
    int status = CMSCTL_EXIT_USAGE;
    char **args = NULL; /* the verb's argv */
    char **made = NULL; /* the "--name=value" strings made from shared options */
    int nmade = 0;
    /* library logs (from common/) are diagnostics here: stderr, warnings and up */
    cms_log_init(PROG, CMS_LOG_WARN, stderr);
    args = calloc((size_t)argc + 1, sizeof *args);
    made = calloc((size_t)argc + 1, sizeof *made);
    if (args == NULL || made == NULL) {
        status = cmsctl_fail(PROG, "out of memory");
        goto out;
    }

    /* shared options before the verb, each made "--name=value" */
    int a = 1;
    for (; a < argc && argv[a][0] == '-'; a++) {
        const char *arg = argv[a];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            fputs(overall_help, stdout);
            status = CMSCTL_EXIT_OK;
            goto out;
        }
        if (strcmp(arg, "--version") == 0) {
            printf("%s %s\n", PROG, CMS_VERSION);
            status = CMSCTL_EXIT_OK;
            goto out;
        }
        const char *name, *val = NULL;
        size_t namelen;
        if (strncmp(arg, "-o", 2) == 0) {
            name = "output";
            namelen = strlen(name);
            if (arg[2] != '\0')
                val = arg + 2 + (arg[2] == '=');
        } else if (strncmp(arg, "--", 2) == 0 && arg[2] != '\0') {
            name = arg + 2;
            const char *eq = strchr(name, '=');
            namelen = eq ? (size_t)(eq - name) : strlen(name);
            if (eq)
                val = eq + 1;
        } else {
            status = cmsctl_usage(PROG, "\"%s\" before the verb is not an option", arg);
            goto out;
        }
        const shared_option *so = find_shared(name, namelen);
        if (so == NULL) {
            status = cmsctl_usage(PROG,
                                  "--%.*s is not a shared option: only -o/--output, --json, "
                                  "--timeout, --nats-url, the other --nats-* options, "
                                  "--command-prefix and --database-url may come before the "
                                  "verb; put it after the verb",
                                  (int)namelen, name);
            goto out;
        }
        if (val == NULL && so->takes_value) {
            if (a + 1 >= argc) {
                status = cmsctl_usage(PROG, "--%s needs a value", so->name);
                goto out;
            }
            val = argv[++a];
        }
        size_t len = strlen(so->name) + (val ? strlen(val) : 0) + 4;
        char *opt = malloc(len);
        if (opt == NULL) {
            status = cmsctl_fail(PROG, "out of memory");
            goto out;
        }
        if (val != NULL)
            snprintf(opt, len, "--%s=%s", so->name, val);
        else
            snprintf(opt, len, "--%s", so->name);
        made[nmade++] = opt;
    }
    if (a >= argc) {
        fputs(overall_help, stderr);
        status = cmsctl_usage(PROG, "%s", "a verb is needed");
        goto out;
    }
    const char *verb = argv[a];
    if (strcmp(verb, "help") == 0) {
        fputs(overall_help, stdout);
        status = CMSCTL_EXIT_OK;
        goto out;
    }

    /* VERB [SUB-VERB], the shared options, then the rest as given */
    int n = 0;
    args[n++] = argv[a++];
    bool sub = a < argc && argv[a][0] != '-';
    if (has_sub_verb(verb) && sub)
        args[n++] = argv[a++];
    /* without its sub-verb such a verb only explains itself: nothing to pass on */
    for (int i = 0; i < nmade && (sub || !has_sub_verb(verb)); i++)
        args[n++] = made[i];
    while (a < argc)
        args[n++] = argv[a++];
    args[n] = NULL;
    status = run_verb(n, args);
out:
    for (int i = 0; made != NULL && i < nmade; i++)
        free(made[i]);
    free(made);
    free(args);
    /* nats.c keeps library threads until told: once, at the very end, and
     * waiting for them so that nothing of theirs is left at exit */
    (void)nats_CloseAndWait(5000);
    fflush(stdout);
    return status;
}
