/* cmsctl: the operator's command line for the contract management system.
 * One verb per command (cmsctl VERB [options]); each verb has its own
 * --help. It owns no data: it reads the audit log, writes, records and
 * replays event streams, and sends commands to the services.
 *
 * Exit status: 0 done, 1 failed, 2 usage error. */
#include <nats/nats.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "log.h"
#include "verbs.h"

#define PROG "cmsctl"

static const char overall_help[] =
    "cmsctl - command line of the contract management system\n"
    "\n"
    "usage: cmsctl VERB [options] [args]\n"
    "       cmsctl VERB --help\n"
    "\n"
    "verbs:\n"
    "  gen           write synthetic events (optionally with poison) to a .pbs file\n"
    "  record        capture live events from NATS into a .pbs file\n"
    "  replay        publish the events of a .pbs file to JetStream (CMS_EVENTS)\n"
    "  audit query   read the audit log, filtered, with keyset pagination\n"
    "  identity      create, get, list, suspend, activate, deactivate identities\n"
    "  credential    issue, revoke, list the credentials of identities\n"
    "\n"
    "A .pbs file is a sequence of protobuf messages (cms.v1.Envelope), each preceded by\n"
    "its length as a varint, as protobuf's writeDelimitedTo writes them.\n"
    "\n"
    "Options come from environment variables (CMS_DATABASE_URL, CMS_NATS_URL,\n"
    "CMS_COMMAND_PREFIX) and flags; a flag overrides its variable. The identity and\n"
    "credential verbs send commands to cms-identity with the API key from CMS_API_KEY,\n"
    "else the file CMS_CREDENTIALS_FILE names, else ~/.config/cms/credentials.\n"
    "Exit status: 0 done, 1 failed, 2 usage error.\n";

int main(int argc, char **argv)
{
    int status = CMSCTL_EXIT_USAGE;
    /* library logs (from common/) are diagnostics here: stderr, warnings and up */
    cms_log_init(PROG, CMS_LOG_WARN, stderr);
    if (argc < 2) {
        fputs(overall_help, stderr);
        fprintf(stderr, "\n%s: a verb is needed; try %s --help\n", PROG, PROG);
        goto out;
    }
    const char *verb = argv[1];
    if (strcmp(verb, "--help") == 0 || strcmp(verb, "-h") == 0 || strcmp(verb, "help") == 0) {
        fputs(overall_help, stdout);
        status = CMSCTL_EXIT_OK;
    } else if (strcmp(verb, "--version") == 0) {
        printf("%s %s\n", PROG, CMS_VERSION);
        status = CMSCTL_EXIT_OK;
    } else if (strcmp(verb, "gen") == 0) {
        status = cmsctl_gen_main(argc - 1, argv + 1);
    } else if (strcmp(verb, "record") == 0) {
        status = cmsctl_record_main(argc - 1, argv + 1);
    } else if (strcmp(verb, "replay") == 0) {
        status = cmsctl_replay_main(argc - 1, argv + 1);
    } else if (strcmp(verb, "audit") == 0) {
        status = cmsctl_audit_main(argc - 1, argv + 1);
    } else if (strcmp(verb, "identity") == 0) {
        status = cmsctl_identity_main(argc - 1, argv + 1);
    } else if (strcmp(verb, "credential") == 0) {
        status = cmsctl_credential_main(argc - 1, argv + 1);
    } else {
        status = cmsctl_usage(PROG,
                              "unknown verb \"%s\": want gen, record, replay, audit, identity or "
                              "credential",
                              verb);
    }
out:
    /* nats.c keeps library threads until told: once, at the very end, and
     * waiting for them so that nothing of theirs is left at exit */
    (void)nats_CloseAndWait(5000);
    fflush(stdout);
    return status;
}
