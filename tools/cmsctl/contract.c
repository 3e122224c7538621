/* cmsctl contract: the commands of cms-contracts.
 *
 * Each sub-verb is one request on <prefix>.contracts.<verb> (see ctlcmd.h),
 * with a few that need more: a party given by name (create, list --party)
 * is looked up first with cms-identity's get, as cmsctl identity does; sign
 * asks for the canonical form, checks its hash, signs it with the key file
 * and, without --key-id, finds the caller's public_key credential for that
 * key through cms-identity (whoami, then list_credentials); export is a get
 * written as the document cmsctl contract verify checks offline
 * (contracts/canonical.h). budget, the contract's privacy ledger, is
 * cms-training's: job.c has it. An argument that parses as a UUID is an id,
 * anything else a name. What the sub-verbs share with cmsctl identity (their
 * plumbing, names, table times, paging) is ctlverb.h.
 *
 * Values are checked by the service, which names the field at fault; this
 * file checks only what it must understand itself (that a terms or
 * metadata file holds a JSON object, times, the key file, the shape of the
 * command line).
 *
 * Output (ctlout.h): "key: value" lines for one contract and a table for
 * lists; or with -o json one JSON document (an object, an array for lists)
 * in which terms, metadata and signatures are JSON values, with -o ndjson
 * one compact object per line. canonical writes the signed bytes as they
 * are. The secret key read by sign is wiped once used. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "cms/v1/contracts.pb-c.h"
#include "cms/v1/identity.pb-c.h"
#include "ctlcmd.h"
#include "ctlout.h"
#include "ctlverb.h"
#include "edkey.h"
#include "uuid.h"
#include "verbs.h"

#define SERVICE "contracts"
#define TITLE_COLUMN_MAX 40
#define TEXT_MAX 4096           /* longest server text shown in a table cell */
#define JSON_FILE_MAX (1 << 20) /* a bigger --terms or --metadata file is refused */
#define EXPORT_FORMAT "cms-contract/1"

/* ------------------------------------------------------------------------ */
/* option tables */

static const cms_option create_options[] = {
    CMSCTL_CMD_OPTIONS,
    {"title", NULL, CMS_OPT_STRING, NULL, "the contract's title", CMS_OPT_PUBLIC, true},
    {"description", NULL, CMS_OPT_STRING, NULL, "what it is about", CMS_OPT_PUBLIC, false},
    {"provider", NULL, CMS_OPT_STRING, NULL, "the provider: an identity's ID or NAME",
     CMS_OPT_PUBLIC, true},
    {"consumer", NULL, CMS_OPT_STRING, NULL, "the consumer: an identity's ID or NAME",
     CMS_OPT_PUBLIC, true},
    {"terms", NULL, CMS_OPT_STRING, NULL, "file of the terms, a JSON object (- for stdin)",
     CMS_OPT_PUBLIC, true},
    {"metadata", NULL, CMS_OPT_STRING, NULL, "file of a JSON object kept with the contract",
     CMS_OPT_PUBLIC, false},
};

static const cms_option update_options[] = {
    CMSCTL_CMD_OPTIONS,
    {"title", NULL, CMS_OPT_STRING, NULL, "a new title", CMS_OPT_PUBLIC, false},
    {"description", NULL, CMS_OPT_STRING, NULL, "a new description", CMS_OPT_PUBLIC, false},
    {"clear-description", NULL, CMS_OPT_BOOL, "false", "empty the description", CMS_OPT_PUBLIC,
     false},
    {"terms", NULL, CMS_OPT_STRING, NULL, "file of new terms, a JSON object (- for stdin)",
     CMS_OPT_PUBLIC, false},
    {"metadata", NULL, CMS_OPT_STRING, NULL, "file of new metadata, a JSON object", CMS_OPT_PUBLIC,
     false},
};

static const cms_option amend_options[] = {
    CMSCTL_CMD_OPTIONS,
    {"title", NULL, CMS_OPT_STRING, NULL, "the new draft's title (default: the old one's)",
     CMS_OPT_PUBLIC, false},
    {"description", NULL, CMS_OPT_STRING, NULL, "its description (default: the old one's)",
     CMS_OPT_PUBLIC, false},
    {"terms", NULL, CMS_OPT_STRING, NULL, "file of its terms, a JSON object (- for stdin)",
     CMS_OPT_PUBLIC, false},
    {"metadata", NULL, CMS_OPT_STRING, NULL, "file of its metadata, a JSON object", CMS_OPT_PUBLIC,
     false},
};

static const cms_option ref_options[] = {
    CMSCTL_CMD_OPTIONS,
};

static const cms_option terminate_options[] = {
    CMSCTL_CMD_OPTIONS,
    {"reason", NULL, CMS_OPT_STRING, NULL, "why (kept with the contract and in its event)",
     CMS_OPT_PUBLIC, true},
};

static const cms_option sign_options[] = {
    CMSCTL_CMD_OPTIONS,
    {"key", NULL, CMS_OPT_STRING, NULL, "file of the Ed25519 secret key (cmsctl contract keygen)",
     CMS_OPT_PUBLIC, true},
    {"key-id", NULL, CMS_OPT_STRING, NULL,
     "the public_key credential of that key (default: found through cms-identity)", CMS_OPT_PUBLIC,
     false},
    {"side", NULL, CMS_OPT_STRING, NULL, "provider or consumer (default: the caller's own)",
     CMS_OPT_PUBLIC, false},
};

static const cms_option export_options[] = {
    CMSCTL_CMD_OPTIONS,
    {"out", NULL, CMS_OPT_STRING, NULL, "file to write (default, or -: stdout)", CMS_OPT_PUBLIC,
     false},
};

static const cms_option list_options[] = {
    CMSCTL_CMD_OPTIONS,
    {"status", NULL, CMS_OPT_STRING, NULL,
     "only this status (draft, review, signed, active, completed, terminated, expired)",
     CMS_OPT_PUBLIC, false},
    {"party", NULL, CMS_OPT_STRING, NULL, "only contracts of this identity (ID or NAME)",
     CMS_OPT_PUBLIC, false},
    {"created-after", NULL, CMS_OPT_STRING, NULL, "created at or after, RFC 3339", CMS_OPT_PUBLIC,
     false},
    {"created-before", NULL, CMS_OPT_STRING, NULL, "created before, RFC 3339", CMS_OPT_PUBLIC,
     false},
    CMSCTL_VERB_PAGE_OPTIONS("contracts"),
};

static const char contract_help[] =
    "cmsctl contract - contracts, kept by cms-contracts\n"
    "\n"
    "usage: cmsctl contract create --title T --provider ID|NAME --consumer ID|NAME\n"
    "                              --terms FILE.json [--description D] [--metadata FILE.json]\n"
    "       cmsctl contract update ID [--title T] [--description D] [--clear-description]\n"
    "                              [--terms FILE] [--metadata FILE]\n"
    "       cmsctl contract submit|activate|complete ID\n"
    "       cmsctl contract terminate ID --reason TEXT\n"
    "       cmsctl contract amend ID [--terms FILE] [--title T] [--description D]\n"
    "                             [--metadata FILE]\n"
    "       cmsctl contract get ID\n"
    "       cmsctl contract list [--status S] [--party ID|NAME] [--created-after RFC3339]\n"
    "                            [--created-before RFC3339] [--limit N] [--after CURSOR] [--all]\n"
    "       cmsctl contract canonical ID\n"
    "       cmsctl contract sign ID --key FILE [--key-id CREDENTIAL_ID]\n"
    "       cmsctl contract export ID [--out FILE]\n"
    "       cmsctl contract budget ID       (the privacy ledger, kept by cms-training)\n"
    "       cmsctl contract keygen ...      (offline: makes an Ed25519 key file)\n"
    "       cmsctl contract verify FILE     (offline: checks an exported contract)\n"
    "\n"
    "keygen and verify need no service; budget asks cms-training; the others send\n"
    "commands to cms-contracts.\n"
    "cmsctl contract SUB-VERB --help shows the options of each.\n";

/* ------------------------------------------------------------------------ */
/* arguments */

/* An RFC 3339 option's Unix microseconds (0 when not given). */
static int time_arg(const char *prog, const cms_config *cfg, const char *name, int64_t *us)
{
    const char *text = cms_config_str(cfg, name);
    *us = 0;
    if (text == NULL)
        return CMSCTL_EXIT_OK;
    if (!cmsctl_cmd_time_parse(text, us))
        return cmsctl_usage(prog,
                            "--%s \"%s\" is not an RFC 3339 time: want e.g. "
                            "2026-01-31T00:00:00Z or 2026-01-31T02:00:00+02:00",
                            name, text);
    return CMSCTL_EXIT_OK;
}

/* The secret key of a key file (contract_keys.h: the format keygen writes,
 * private to its owner). */
static int key_load(const char *prog, const char *path, uint8_t sk[64])
{
    char why[512];
    if (cms_edkey_load(path, sk, why, sizeof why))
        return CMSCTL_EXIT_OK;
    return cmsctl_fail(prog, "--key %s", why);
}

/* ------------------------------------------------------------------------ */
/* output */

/* Which sides have signed: "provider,consumer", "provider", ... or "none". */
static const char *signed_sides(const char *signatures_json, char out[32])
{
    json_t *s = json_loads(signatures_json, 0, NULL);
    bool p =
        json_object_get(s, "provider") != NULL && !json_is_null(json_object_get(s, "provider"));
    bool c =
        json_object_get(s, "consumer") != NULL && !json_is_null(json_object_get(s, "consumer"));
    json_decref(s);
    snprintf(out, 32, "%s",
             p && c ? "provider,consumer"
             : p    ? "provider"
             : c    ? "consumer"
                    : "none");
    return out;
}

static json_t *contract_json(const Cms__V1__Contract *k)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    json_object_set_new(o, "id", cmsctl_out_str(k->id));
    json_object_set_new(o, "title", cmsctl_out_str(k->title));
    json_object_set_new(o, "description", cmsctl_out_str(k->description));
    json_object_set_new(o, "provider_id", cmsctl_out_str(k->provider_id));
    json_object_set_new(o, "consumer_id", cmsctl_out_str(k->consumer_id));
    json_object_set_new(o, "status", cmsctl_out_str(k->status));
    json_object_set_new(o, "terms", cmsctl_out_json_text(k->terms_json));
    json_object_set_new(o, "metadata", cmsctl_out_json_text(k->metadata_json));
    json_object_set_new(o, "signatures", cmsctl_out_json_text(k->signatures_json));
    json_object_set_new(o, "content_hash", cmsctl_out_str(k->content_hash));
    cmsctl_out_time(o, "created_at", k->created_at_us);
    cmsctl_out_time(o, "updated_at", k->updated_at_us);
    return o;
}

static void contract_table(const Cms__V1__Contract *k)
{
    char b[TEXT_MAX], t[CMSCTL_CMD_TIME_MAX], sides[32];
    char *terms = cmsctl_out_compact(k->terms_json);
    printf("id: %s\n", cmsctl_out_clean(k->id, b, sizeof b));
    printf("title: %s\n", cmsctl_out_clean(k->title, b, sizeof b));
    if (k->description[0] != '\0')
        printf("description: %s\n", cmsctl_out_clean(k->description, b, sizeof b));
    printf("status: %s\n", cmsctl_out_clean(k->status, b, sizeof b));
    printf("provider_id: %s\n", cmsctl_out_clean(k->provider_id, b, sizeof b));
    printf("consumer_id: %s\n", cmsctl_out_clean(k->consumer_id, b, sizeof b));
    printf("content_hash: %s\n", cmsctl_out_clean(k->content_hash, b, sizeof b));
    printf("terms: %s\n", cmsctl_out_clean(terms != NULL ? terms : "?", b, sizeof b));
    printf("signatures: %s\n", signed_sides(k->signatures_json, sides));
    printf("created_at: %s\n", cmsctl_verb_time(k->created_at_us, t));
    printf("updated_at: %s\n", cmsctl_verb_time(k->updated_at_us, t));
    free(terms);
}

static int print_contract(const char *prog, cmsctl_out_format fmt, const Cms__V1__Contract *k)
{
    if (fmt != CMSCTL_OUT_TABLE)
        return cmsctl_out_emit(prog, fmt, contract_json(k), NULL);
    contract_table(k);
    return CMSCTL_EXIT_OK;
}

/* ------------------------------------------------------------------------ */
/* what the commands share */

/* The contract id argument, checked to be a UUID. */
static int contract_id(const cmsctl_verb *v, char id[CMS_UUID_STRLEN + 1])
{
    if (!cmsctl_verb_uuid(v->arg, id))
        return cmsctl_usage(v->prog, "ID \"%s\" is not a UUID: copy it from cmsctl contract list",
                            v->arg);
    return CMSCTL_EXIT_OK;
}

/* The files of --terms (stdin allowed) and --metadata, NULL when not given. */
static int files_arg(const cmsctl_verb *v, char **terms, char **metadata)
{
    int status = cmsctl_verb_json_file(v->prog, "terms", cms_config_str(v->cfg, "terms"), true,
                                       JSON_FILE_MAX, terms);
    if (status == CMSCTL_EXIT_OK)
        status = cmsctl_verb_json_file(v->prog, "metadata", cms_config_str(v->cfg, "metadata"),
                                       false, JSON_FILE_MAX, metadata);
    return status;
}

/* The command name, whose reply is a contract: printed. */
static int contract_call(cmsctl_verb *v, const char *name, cmsctl_cmd_kind kind,
                         const ProtobufCMessage *req)
{
    int status = cmsctl_verb_call(v, name, kind, req, &cms__v1__contract__descriptor);
    if (status == CMSCTL_EXIT_OK)
        status = print_contract(v->prog, v->fmt, (const Cms__V1__Contract *)v->got);
    return status;
}

/* ------------------------------------------------------------------------ */
/* create, update, amend */

static int create_main(int argc, char **argv)
{
    cmsctl_verb v;
    char *terms = NULL, *metadata = NULL;
    char prov[CMS_UUID_STRLEN + 1], cons[CMS_UUID_STRLEN + 1];
    int status = cmsctl_verb_begin(
        &v, SERVICE, "cmsctl contract create", create_options, CMSCTL_NOPTS(create_options), argc,
        argv, "create a contract",
        "--title T --provider ID|NAME --consumer ID|NAME --terms FILE.json\n\n"
        "Creates a draft between the provider and the consumer (the caller must be\n"
        "one of them, or an admin) and prints it. A NAME is looked up in cms-identity\n"
        "first. --terms - reads the terms from stdin.\n\n" CMSCTL_CMD_KEY_HELP,
        NULL);
    if (status != CMSCTL_EXIT_OK || (status = files_arg(&v, &terms, &metadata)) != CMSCTL_EXIT_OK ||
        (status = cmsctl_verb_open(&v)) != CMSCTL_EXIT_OK ||
        (status = cmsctl_verb_identity_id(&v, cms_config_str(v.cfg, "provider"), prov)) !=
            CMSCTL_EXIT_OK ||
        (status = cmsctl_verb_identity_id(&v, cms_config_str(v.cfg, "consumer"), cons)) !=
            CMSCTL_EXIT_OK)
        goto out;
    Cms__V1__CreateContract req = CMS__V1__CREATE_CONTRACT__INIT;
    req.title = cmsctl_verb_str(&v, "title");
    req.description = cmsctl_verb_str(&v, "description");
    req.provider_id = prov;
    req.consumer_id = cons;
    req.terms_json = terms;
    req.metadata_json = metadata ? metadata : (char *)"";
    status = contract_call(&v, "create", CMSCTL_CMD_WRITE, &req.base);
out:
    free(terms);
    free(metadata);
    return cmsctl_verb_end(&v, status);
}

static int update_main(int argc, char **argv)
{
    cmsctl_verb v;
    char *terms = NULL, *metadata = NULL;
    char id[CMS_UUID_STRLEN + 1];
    int status = cmsctl_verb_begin(&v, SERVICE, "cmsctl contract update", update_options,
                                   CMSCTL_NOPTS(update_options), argc, argv, "change a draft",
                                   "ID [--title T] [--description D | --clear-description] "
                                   "[--terms FILE] [--metadata FILE]\n\n"
                                   "Changes what is given of a draft (a party, or an admin) and "
                                   "prints it;\nthe rest stays as it is.\n\n" CMSCTL_CMD_KEY_HELP,
                                   "the contract's ID");
    if (status != CMSCTL_EXIT_OK || (status = contract_id(&v, id)) != CMSCTL_EXIT_OK ||
        (status = files_arg(&v, &terms, &metadata)) != CMSCTL_EXIT_OK)
        goto out;
    const char *title = cms_config_str(v.cfg, "title");
    const char *desc = cms_config_str(v.cfg, "description");
    bool clear = cms_config_bool(v.cfg, "clear-description");
    if (clear && desc != NULL) {
        status = cmsctl_usage(v.prog, "give --description or --clear-description, not both");
        goto out;
    }
    if (title == NULL && desc == NULL && !clear && terms == NULL && metadata == NULL) {
        status = cmsctl_usage(v.prog, "nothing to change: give --title, --description, "
                                      "--clear-description, --terms or --metadata");
        goto out;
    }
    if ((status = cmsctl_verb_open(&v)) != CMSCTL_EXIT_OK)
        goto out;
    Cms__V1__UpdateContract req = CMS__V1__UPDATE_CONTRACT__INIT;
    req.id = id;
    req.title = cmsctl_verb_str(&v, "title");
    req.description = cmsctl_verb_str(&v, "description");
    req.clear_description = clear;
    req.terms_json = terms ? terms : (char *)"";
    req.metadata_json = metadata ? metadata : (char *)"";
    status = contract_call(&v, "update", CMSCTL_CMD_WRITE, &req.base);
out:
    free(terms);
    free(metadata);
    return cmsctl_verb_end(&v, status);
}

static int amend_main(int argc, char **argv)
{
    cmsctl_verb v;
    char *terms = NULL, *metadata = NULL;
    char id[CMS_UUID_STRLEN + 1];
    int status = cmsctl_verb_begin(
        &v, SERVICE, "cmsctl contract amend", amend_options, CMSCTL_NOPTS(amend_options), argc,
        argv, "start an amendment",
        "ID [--terms FILE] [--title T] [--description D] [--metadata FILE]\n\n"
        "Makes a new draft with the contract's parties whose metadata's \"supersedes\"\n"
        "names the old contract (its id and content hash), and prints it. What is not\n"
        "given is the old contract's.\n\n" CMSCTL_CMD_KEY_HELP,
        "the contract's ID");
    if (status != CMSCTL_EXIT_OK || (status = contract_id(&v, id)) != CMSCTL_EXIT_OK ||
        (status = files_arg(&v, &terms, &metadata)) != CMSCTL_EXIT_OK ||
        (status = cmsctl_verb_open(&v)) != CMSCTL_EXIT_OK)
        goto out;
    Cms__V1__AmendContract req = CMS__V1__AMEND_CONTRACT__INIT;
    req.id = id;
    req.title = cmsctl_verb_str(&v, "title");
    req.description = cmsctl_verb_str(&v, "description");
    req.terms_json = terms ? terms : (char *)"";
    req.metadata_json = metadata ? metadata : (char *)"";
    status = contract_call(&v, "amend", CMSCTL_CMD_WRITE, &req.base);
out:
    free(terms);
    free(metadata);
    return cmsctl_verb_end(&v, status);
}

/* ------------------------------------------------------------------------ */
/* submit, activate, complete, get, terminate */

/* A ContractRef command: verb on the contract ID. */
static int ref_main(int argc, char **argv, const char *prog, const char *verbname,
                    cmsctl_cmd_kind kind, const char *summary, const char *what_it_does)
{
    cmsctl_verb v;
    char id[CMS_UUID_STRLEN + 1], tail[512];
    snprintf(tail, sizeof tail, "ID\n\n%s\n\n%s", what_it_does, CMSCTL_CMD_KEY_HELP);
    int status = cmsctl_verb_begin(&v, SERVICE, prog, ref_options, CMSCTL_NOPTS(ref_options), argc,
                                   argv, summary, tail, "the contract's ID");
    if (status != CMSCTL_EXIT_OK || (status = contract_id(&v, id)) != CMSCTL_EXIT_OK ||
        (status = cmsctl_verb_open(&v)) != CMSCTL_EXIT_OK)
        goto out;
    Cms__V1__ContractRef req = CMS__V1__CONTRACT_REF__INIT;
    req.id = id;
    status = contract_call(&v, verbname, kind, &req.base);
out:
    return cmsctl_verb_end(&v, status);
}

static int terminate_main(int argc, char **argv)
{
    cmsctl_verb v;
    char id[CMS_UUID_STRLEN + 1];
    int status =
        cmsctl_verb_begin(&v, SERVICE, "cmsctl contract terminate", terminate_options,
                          CMSCTL_NOPTS(terminate_options), argc, argv, "terminate a contract",
                          "ID --reason TEXT\n\n"
                          "Ends the contract before its term (a party, or an admin) and "
                          "prints it.\n\n" CMSCTL_CMD_KEY_HELP,
                          "the contract's ID");
    if (status != CMSCTL_EXIT_OK || (status = contract_id(&v, id)) != CMSCTL_EXIT_OK ||
        (status = cmsctl_verb_open(&v)) != CMSCTL_EXIT_OK)
        goto out;
    Cms__V1__TerminateContract req = CMS__V1__TERMINATE_CONTRACT__INIT;
    req.id = id;
    req.reason = cmsctl_verb_str(&v, "reason");
    status = contract_call(&v, "terminate", CMSCTL_CMD_WRITE, &req.base);
out:
    return cmsctl_verb_end(&v, status);
}

/* ------------------------------------------------------------------------ */
/* list */

static const Cms__V1__ContractPage *page_at(ProtobufCMessage *const *pages, size_t i)
{
    return (const Cms__V1__ContractPage *)pages[i];
}

static int print_contracts(const cmsctl_verb *v, ProtobufCMessage *const *pages, size_t n)
{
    size_t rows = 0;
    for (size_t i = 0; i < n; i++)
        rows += page_at(pages, i)->n_contracts;
    if (v->fmt != CMSCTL_OUT_TABLE) {
        json_t *arr = json_array();
        for (size_t i = 0; arr != NULL && i < n; i++) {
            const Cms__V1__ContractPage *pg = page_at(pages, i);
            for (size_t j = 0; j < pg->n_contracts; j++) {
                if (json_array_append_new(arr, contract_json(pg->contracts[j])) != 0) {
                    json_decref(arr);
                    arr = NULL;
                    break;
                }
            }
        }
        if (rows == 0)
            cmsctl_out_none(v->fmt, "no contracts match");
        return cmsctl_out_emit(v->prog, v->fmt, arr, NULL);
    }
    if (rows == 0) {
        cmsctl_out_none(v->fmt, "no contracts match");
        return CMSCTL_EXIT_OK;
    }
    printf("%-36s  %-10s  %-17s  %-20s  %s\n", "ID", "STATUS", "SIGNED", "CREATED_AT", "TITLE");
    for (size_t i = 0; i < n; i++) {
        const Cms__V1__ContractPage *pg = page_at(pages, i);
        for (size_t j = 0; j < pg->n_contracts; j++) {
            const Cms__V1__Contract *k = pg->contracts[j];
            char bid[64], bstatus[64], btitle[TITLE_COLUMN_MAX + 1], sides[32],
                t[CMSCTL_CMD_TIME_MAX];
            printf("%-36s  %-10s  %-17s  %-20s  %s\n", cmsctl_out_clean(k->id, bid, sizeof bid),
                   cmsctl_out_clean(k->status, bstatus, sizeof bstatus),
                   signed_sides(k->signatures_json, sides), cmsctl_verb_time(k->created_at_us, t),
                   cmsctl_out_clean(k->title, btitle, sizeof btitle));
        }
    }
    return CMSCTL_EXIT_OK;
}

/* The filters of one cmsctl contract list, but for --status. */
typedef struct contract_filter {
    char party[CMS_UUID_STRLEN + 1]; /* "" for any */
    int64_t after_us, before_us;     /* created in [after_us, before_us); 0: unbounded */
    int32_t limit;
} contract_filter;

/* ctx: the contract_filter. */
static int ask_contracts(cmsctl_verb *v, const void *ctx, const char *after,
                         ProtobufCMessage **page)
{
    const contract_filter *f = ctx;
    Cms__V1__ListContracts req = CMS__V1__LIST_CONTRACTS__INIT;
    req.party_id = (char *)f->party;
    req.status = cmsctl_verb_str(v, "status");
    req.created_after_us = f->after_us;
    req.created_before_us = f->before_us;
    req.limit = f->limit;
    req.after = (char *)after;
    return cmsctl_cmd_call(v->c, "list", CMSCTL_CMD_READ, &req.base,
                           &cms__v1__contract_page__descriptor, page);
}

static const char *contracts_next(const ProtobufCMessage *page, size_t *items)
{
    const Cms__V1__ContractPage *p = (const Cms__V1__ContractPage *)page;
    *items = p->n_contracts;
    return p->next;
}

static int list_main(int argc, char **argv)
{
    static const cmsctl_verb_pager pager = {ask_contracts, contracts_next, print_contracts};
    cmsctl_verb v;
    contract_filter f = {.party = ""};
    int status = cmsctl_verb_begin(
        &v, SERVICE, "cmsctl contract list", list_options, CMSCTL_NOPTS(list_options), argc, argv,
        "list contracts",
        "\n\n"
        "Lists the caller's contracts (every contract for an admin or an auditor),\n"
        "oldest first, --limit at a time. When more may follow it ends with\n"
        "\"next: --after CURSOR\" (on stderr with -o json or ndjson): run the same\n"
        "command with that flag added for the next page, or use --all to follow every\n"
        "page. No contracts: nothing on stdout (\"[]\" with -o json) and\n"
        "\"(no contracts match)\" on stderr.\n\n" CMSCTL_CMD_KEY_HELP,
        NULL);
    if (status != CMSCTL_EXIT_OK || (status = cmsctl_verb_limit(&v, &f.limit)) != CMSCTL_EXIT_OK ||
        (status = time_arg(v.prog, v.cfg, "created-after", &f.after_us)) != CMSCTL_EXIT_OK ||
        (status = time_arg(v.prog, v.cfg, "created-before", &f.before_us)) != CMSCTL_EXIT_OK ||
        (status = cmsctl_verb_open(&v)) != CMSCTL_EXIT_OK)
        goto out;
    const char *party = cms_config_str(v.cfg, "party");
    if (party != NULL && (status = cmsctl_verb_identity_id(&v, party, f.party)) != CMSCTL_EXIT_OK)
        goto out;
    status = cmsctl_verb_list(&v, &pager, &f);
out:
    return cmsctl_verb_end(&v, status);
}

/* ------------------------------------------------------------------------ */
/* canonical, sign */

/* The contract's canonical form, its hash checked: *digest is the SHA-256
 * of the bytes, which must be what the service says the content hash is. */
static int get_canonical(cmsctl_verb *v, const char *id, Cms__V1__CanonicalForm **out,
                         uint8_t digest[crypto_hash_sha256_BYTES])
{
    char hex[crypto_hash_sha256_BYTES * 2 + 1];
    Cms__V1__ContractRef req = CMS__V1__CONTRACT_REF__INIT;
    req.id = (char *)id;
    int status = cmsctl_cmd_call(v->c, "canonical", CMSCTL_CMD_READ, &req.base,
                                 &cms__v1__canonical_form__descriptor, (ProtobufCMessage **)out);
    if (status != CMSCTL_EXIT_OK)
        return status;
    crypto_hash_sha256(digest, (*out)->canonical.data, (*out)->canonical.len);
    sodium_bin2hex(hex, sizeof hex, digest, crypto_hash_sha256_BYTES);
    if (strcmp(hex, (*out)->content_hash) != 0) {
        char b[128];
        return cmsctl_fail(v->prog,
                           "the canonical form's SHA-256 is %s but the service says the content "
                           "hash is %s: refusing to sign or show it",
                           hex, cmsctl_out_clean((*out)->content_hash, b, sizeof b));
    }
    return CMSCTL_EXIT_OK;
}

static int canonical_main(int argc, char **argv)
{
    cmsctl_verb v;
    char id[CMS_UUID_STRLEN + 1];
    uint8_t digest[crypto_hash_sha256_BYTES];
    Cms__V1__CanonicalForm *cf = NULL;
    int status = cmsctl_verb_begin(
        &v, SERVICE, "cmsctl contract canonical", ref_options, CMSCTL_NOPTS(ref_options), argc,
        argv, "the bytes a contract's parties sign",
        "ID\n\n"
        "Writes the contract's canonical form (RFC 8785 JSON of its id, title,\n"
        "description, parties and terms) to stdout exactly, without a newline: its\n"
        "SHA-256 is the content_hash, checked here. -o json prints {\"id\", \"canonical\",\n"
        "\"content_hash\"} instead.\n\n" CMSCTL_CMD_KEY_HELP,
        "the contract's ID");
    if (status != CMSCTL_EXIT_OK || (status = contract_id(&v, id)) != CMSCTL_EXIT_OK ||
        (status = cmsctl_verb_open(&v)) != CMSCTL_EXIT_OK ||
        (status = get_canonical(&v, id, &cf, digest)) != CMSCTL_EXIT_OK)
        goto out;
    if (v.fmt != CMSCTL_OUT_TABLE) {
        json_t *o = json_object();
        json_t *text = json_stringn((const char *)cf->canonical.data, cf->canonical.len);
        if (o != NULL && text == NULL) {
            json_decref(o);
            status = cmsctl_fail(v.prog, "the canonical form is not UTF-8");
            goto out;
        }
        json_object_set_new(o, "id", cmsctl_out_str(cf->id));
        json_object_set_new(o, "canonical", text);
        json_object_set_new(o, "content_hash", cmsctl_out_str(cf->content_hash));
        status = cmsctl_out_emit(v.prog, v.fmt, o, NULL);
        goto out;
    }
    if (fwrite(cf->canonical.data, 1, cf->canonical.len, stdout) != cf->canonical.len ||
        fflush(stdout) != 0)
        status = cmsctl_fail(v.prog, "cannot write to stdout: %s", strerror(errno));
out:
    if (cf != NULL)
        cms__v1__canonical_form__free_unpacked(cf, NULL);
    return cmsctl_verb_end(&v, status);
}

/* The caller's public_key credential for pk64 (the key's public half,
 * standard base64): not revoked, not expired, asked of cms-identity. */
static int find_key_id(cmsctl_verb *v, const char *keyfile, const char *pk64,
                       char key_id[CMS_UUID_STRLEN + 1])
{
    int status;
    Cms__V1__Principal *who = NULL;
    Cms__V1__CredentialList *creds = NULL;
    cmsctl_cmd *idc = NULL;
    if ((status = cmsctl_verb_identity(v, &idc)) != CMSCTL_EXIT_OK ||
        (status = cmsctl_cmd_whoami(idc, &who)) != CMSCTL_EXIT_OK)
        goto out;
    Cms__V1__ListCredentials req = CMS__V1__LIST_CREDENTIALS__INIT;
    req.identity_id = who->identity_id;
    if ((status = cmsctl_cmd_call(idc, "list_credentials", CMSCTL_CMD_READ, &req.base,
                                  &cms__v1__credential_list__descriptor,
                                  (ProtobufCMessage **)&creds)) != CMSCTL_EXIT_OK)
        goto out;
    int64_t now = cmsctl_wall_us();
    for (size_t i = 0; i < creds->n_credentials; i++) {
        const Cms__V1__Credential *c = creds->credentials[i];
        if (strcmp(c->type, "public_key") != 0 || c->revoked_at_us != 0 ||
            (c->expires_at_us != 0 && c->expires_at_us <= now) || strcmp(c->public_key, pk64) != 0)
            continue;
        snprintf(key_id, CMS_UUID_STRLEN + 1, "%s", c->id);
        goto out;
    }
    {
        char b[128];
        status = cmsctl_fail(v->prog,
                             "%s has no public_key credential for the key in %s (public key %s): "
                             "register it with cmsctl credential issue %s --type public_key "
                             "--public-key %s --expires-in 365d, or give --key-id",
                             cmsctl_out_clean(who->name, b, sizeof b), keyfile, pk64,
                             who->identity_id, pk64);
    }
out:
    if (creds != NULL)
        cms__v1__credential_list__free_unpacked(creds, NULL);
    if (who != NULL)
        cms__v1__principal__free_unpacked(who, NULL);
    return status;
}

static int sign_main(int argc, char **argv)
{
    cmsctl_verb v;
    char id[CMS_UUID_STRLEN + 1], key_id[CMS_UUID_STRLEN + 1];
    char
        pk64[sodium_base64_ENCODED_LEN(crypto_sign_PUBLICKEYBYTES, sodium_base64_VARIANT_ORIGINAL)];
    char sig64[sodium_base64_ENCODED_LEN(crypto_sign_BYTES,
                                         sodium_base64_VARIANT_URLSAFE_NO_PADDING)];
    uint8_t sk[crypto_sign_SECRETKEYBYTES], pk[crypto_sign_PUBLICKEYBYTES];
    uint8_t digest[crypto_hash_sha256_BYTES], sig[crypto_sign_BYTES];
    Cms__V1__CanonicalForm *cf = NULL;
    sodium_memzero(sk, sizeof sk);
    int status = cmsctl_verb_begin(
        &v, SERVICE, "cmsctl contract sign", sign_options, CMSCTL_NOPTS(sign_options), argc, argv,
        "sign a contract",
        "ID --key FILE [--key-id CREDENTIAL_ID] [--side provider|consumer]\n\n"
        "Fetches the contract's canonical form, checks that its SHA-256 is the\n"
        "content_hash, signs those 32 bytes with the Ed25519 key in FILE (one line,\n"
        "base64 of the 64-byte secret key, mode 600: cmsctl contract keygen) and gives\n"
        "the signature to cms-contracts for the caller's side; prints the contract.\n"
        "Without --key-id the caller's public_key credential for that key is looked up\n"
        "in cms-identity.\n\n" CMSCTL_CMD_KEY_HELP,
        "the contract's ID");
    if (status != CMSCTL_EXIT_OK || (status = contract_id(&v, id)) != CMSCTL_EXIT_OK)
        goto out;
    const char *keyfile = cms_config_str(v.cfg, "key");
    const char *kid = cms_config_str(v.cfg, "key-id");
    if (kid != NULL && !cmsctl_verb_uuid(kid, key_id)) {
        status = cmsctl_usage(
            v.prog, "--key-id \"%s\" is not a UUID: copy it from cmsctl credential list", kid);
        goto out;
    }
    if ((status = key_load(v.prog, keyfile, sk)) != CMSCTL_EXIT_OK ||
        (status = cmsctl_verb_open(&v)) != CMSCTL_EXIT_OK ||
        (status = get_canonical(&v, id, &cf, digest)) != CMSCTL_EXIT_OK)
        goto out;
    crypto_sign_ed25519_sk_to_pk(pk, sk);
    sodium_bin2base64(pk64, sizeof pk64, pk, sizeof pk, sodium_base64_VARIANT_ORIGINAL);
    if (kid == NULL && (status = find_key_id(&v, keyfile, pk64, key_id)) != CMSCTL_EXIT_OK)
        goto out;
    crypto_sign_detached(sig, NULL, digest, sizeof digest, sk);
    sodium_memzero(sk, sizeof sk);
    sodium_bin2base64(sig64, sizeof sig64, sig, sizeof sig,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    Cms__V1__SignContract req = CMS__V1__SIGN_CONTRACT__INIT;
    req.id = id;
    req.signature = sig64;
    req.key_id = key_id;
    req.side = cmsctl_verb_str(&v, "side");
    status = contract_call(&v, "sign", CMSCTL_CMD_WRITE, &req.base);
out:
    sodium_memzero(sk, sizeof sk);
    if (cf != NULL)
        cms__v1__canonical_form__free_unpacked(cf, NULL);
    return cmsctl_verb_end(&v, status);
}

/* ------------------------------------------------------------------------ */
/* export */

static json_t *export_time(int64_t us)
{
    char t[CMSCTL_CMD_TIME_MAX];
    cmsctl_cmd_time_format(us, true, t);
    return t[0] != '\0' ? json_string(t) : json_null();
}

/* The document cmsctl contract verify checks (contracts/canonical.h's
 * cc_verify_document), its keys in this order. */
static json_t *export_json(const Cms__V1__Contract *k)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    json_object_set_new(o, "format", json_string(EXPORT_FORMAT));
    json_object_set_new(o, "id", cmsctl_out_str(k->id));
    json_object_set_new(o, "title", cmsctl_out_str(k->title));
    json_object_set_new(o, "description", cmsctl_out_str(k->description));
    json_object_set_new(o, "provider_id", cmsctl_out_str(k->provider_id));
    json_object_set_new(o, "consumer_id", cmsctl_out_str(k->consumer_id));
    json_object_set_new(o, "status", cmsctl_out_str(k->status));
    json_object_set_new(o, "terms", cmsctl_out_json_text(k->terms_json));
    json_object_set_new(o, "metadata", cmsctl_out_json_text(k->metadata_json));
    json_object_set_new(o, "created_at", export_time(k->created_at_us));
    json_object_set_new(o, "updated_at", export_time(k->updated_at_us));
    json_object_set_new(o, "content_hash", cmsctl_out_str(k->content_hash));
    json_object_set_new(o, "signatures", cmsctl_out_json_text(k->signatures_json));
    return o;
}

static int export_main(int argc, char **argv)
{
    cmsctl_verb v;
    char id[CMS_UUID_STRLEN + 1];
    char *text = NULL;
    json_t *doc = NULL;
    FILE *f = NULL;
    int status = cmsctl_verb_begin(
        &v, SERVICE, "cmsctl contract export", export_options, CMSCTL_NOPTS(export_options), argc,
        argv, "write a contract for offline verification",
        "ID [--out FILE]\n\n"
        "Writes the contract as one JSON document {\"format\": \"cms-contract/1\", \"id\",\n"
        "\"title\", \"description\", \"provider_id\", \"consumer_id\", \"status\", \"terms\",\n"
        "\"metadata\", \"created_at\", \"updated_at\", \"content_hash\", \"signatures\"} to\n"
        "FILE (default stdout): cmsctl contract verify FILE checks its signatures\n"
        "without the services.\n\n" CMSCTL_CMD_KEY_HELP,
        "the contract's ID");
    if (status != CMSCTL_EXIT_OK || (status = contract_id(&v, id)) != CMSCTL_EXIT_OK ||
        (status = cmsctl_verb_open(&v)) != CMSCTL_EXIT_OK)
        goto out;
    Cms__V1__ContractRef req = CMS__V1__CONTRACT_REF__INIT;
    req.id = id;
    if ((status = cmsctl_verb_call(&v, "get", CMSCTL_CMD_READ, &req.base,
                                   &cms__v1__contract__descriptor)) != CMSCTL_EXIT_OK)
        goto out;
    doc = export_json((const Cms__V1__Contract *)v.got);
    if (doc == NULL || (text = json_dumps(doc, JSON_INDENT(2))) == NULL) {
        status = cmsctl_fail(v.prog, "out of memory");
        goto out;
    }
    const char *path = cms_config_str(v.cfg, "out");
    bool to_stdout = path == NULL || strcmp(path, "-") == 0;
    if (to_stdout)
        f = stdout;
    else if ((f = fopen(path, "w")) == NULL) {
        status = cmsctl_fail(v.prog, "--out %s: %s", path, strerror(errno));
        goto out;
    }
    size_t len = strlen(text);
    bool ok = fwrite(text, 1, len, f) == len && fputc('\n', f) != EOF && fflush(f) == 0;
    if (!to_stdout) {
        ok = fclose(f) == 0 && ok;
        f = NULL;
    }
    if (!ok)
        status = cmsctl_fail(v.prog, "cannot write %s: %s", to_stdout ? "stdout" : path,
                             strerror(errno));
out:
    if (f != NULL && f != stdout)
        fclose(f);
    free(text);
    json_decref(doc);
    return cmsctl_verb_end(&v, status);
}

/* ------------------------------------------------------------------------ */
/* cmsctl contract ... */

int cmsctl_contract_main(int argc, char **argv)
{
    static const char prog[] = "cmsctl contract";
    static const char want[] = "create, update, submit, sign, activate, complete, terminate, "
                               "amend, get, list, canonical, export or budget";
    if (argc < 2) {
        fputs(contract_help, stderr);
        return cmsctl_usage(prog, "a sub-verb is needed: %s", want);
    }
    const char *sub = argv[1];
    int n = argc - 1;
    char **a = argv + 1;
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0 || strcmp(sub, "help") == 0) {
        fputs(contract_help, stdout);
        return CMSCTL_EXIT_OK;
    }
    if (strcmp(sub, "create") == 0)
        return create_main(n, a);
    if (strcmp(sub, "update") == 0)
        return update_main(n, a);
    if (strcmp(sub, "amend") == 0)
        return amend_main(n, a);
    if (strcmp(sub, "submit") == 0)
        return ref_main(n, a, "cmsctl contract submit", "submit", CMSCTL_CMD_WRITE,
                        "submit a draft for signing",
                        "Puts the draft in review, where both parties sign it, and prints it.");
    if (strcmp(sub, "activate") == 0)
        return ref_main(n, a, "cmsctl contract activate", "activate", CMSCTL_CMD_WRITE,
                        "activate a signed contract",
                        "Makes a signed contract active now (otherwise its term's start does) "
                        "and\nprints it.");
    if (strcmp(sub, "complete") == 0)
        return ref_main(n, a, "cmsctl contract complete", "complete", CMSCTL_CMD_WRITE,
                        "complete an active contract",
                        "Marks an active contract as fulfilled and prints it.");
    if (strcmp(sub, "get") == 0)
        return ref_main(n, a, "cmsctl contract get", "get", CMSCTL_CMD_READ, "show one contract",
                        "Prints the contract with that id.");
    if (strcmp(sub, "terminate") == 0)
        return terminate_main(n, a);
    if (strcmp(sub, "list") == 0)
        return list_main(n, a);
    if (strcmp(sub, "canonical") == 0)
        return canonical_main(n, a);
    if (strcmp(sub, "sign") == 0)
        return sign_main(n, a);
    if (strcmp(sub, "export") == 0)
        return export_main(n, a);
    if (strcmp(sub, "budget") == 0)
        return cmsctl_contract_budget_main(n, a);
    if (strcmp(sub, "keygen") == 0 || strcmp(sub, "verify") == 0)
        return cmsctl_contract_offline_main(argc, argv);
    return cmsctl_usage(prog, "unknown sub-verb \"%s\": want %s", sub, want);
}
