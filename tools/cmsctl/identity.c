/* cmsctl identity and cmsctl credential: the commands of cms-identity.
 *
 * Each sub-verb is one request on <prefix>.identity.<verb> (see ctlcmd.h),
 * or two when an identity is given by name where the command takes an id
 * (set_status, issue_credential, list_credentials): a get by name comes
 * first. An argument that parses as a UUID is an id, anything else a name.
 * What the sub-verbs share with cmsctl contract (their plumbing, names,
 * table times, paging) is ctlverb.h.
 *
 * Values are checked by the service, which names the field at fault; this
 * file checks only what it must understand itself (JSON it merges roles
 * into, times and durations it converts, the shape of the command line).
 *
 * Output (ctlout.h): "key: value" lines for one object and a table for
 * lists; or with -o json one JSON document (an object, an array for lists),
 * with -o ndjson one compact object per line. Times are RFC 3339 in UTC: to
 * the second in tables, to the microsecond in JSON, where each "*_at"
 * string comes with its "*_at_us" (Unix microseconds, as on the wire). An
 * issued API key is printed once, to stdout only.
 *
 * cmsctl whoami is here too: it is cms-identity's authenticate, asked about
 * the caller's own key. */
#include <inttypes.h>
#include <jansson.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cms/v1/identity.pb-c.h"
#include "ctlcmd.h"
#include "ctlout.h"
#include "ctlverb.h"
#include "uuid.h"
#include "verbs.h"

#define SERVICE "identity"
#define NAME_COLUMN_MAX 40
#define TEXT_MAX 1024 /* longest server text shown in a table cell */
#define ROLES_TEXT_MAX 256

/* ------------------------------------------------------------------------ */
/* option tables */

static const cms_option create_options[] = {
    CMSCTL_CMD_OPTIONS,
    {"type", NULL, CMS_OPT_STRING, NULL, "user, machine or enclave", CMS_OPT_PUBLIC, true},
    {"metadata", NULL, CMS_OPT_STRING, NULL, "a JSON object kept with the identity", CMS_OPT_PUBLIC,
     false},
    {"roles", NULL, CMS_OPT_STRING, NULL,
     "comma-separated roles, merged into the metadata's \"roles\" (e.g. admin)", CMS_OPT_PUBLIC,
     false},
};

static const cms_option get_options[] = {
    CMSCTL_CMD_OPTIONS,
};

static const cms_option list_options[] = {
    CMSCTL_CMD_OPTIONS,
    {"type", NULL, CMS_OPT_STRING, NULL, "only this type (user, machine, enclave)", CMS_OPT_PUBLIC,
     false},
    {"status", NULL, CMS_OPT_STRING, NULL, "only this status (active, inactive, suspended)",
     CMS_OPT_PUBLIC, false},
    CMSCTL_VERB_PAGE_OPTIONS("identities"),
};

static const cms_option status_options[] = {
    CMSCTL_CMD_OPTIONS,
    {"reason", NULL, CMS_OPT_STRING, NULL, "why (kept with the change and in its event)",
     CMS_OPT_PUBLIC, false},
};

static const cms_option issue_options[] = {
    CMSCTL_CMD_OPTIONS,
    {"type", NULL, CMS_OPT_STRING, NULL, "api_key, public_key or attestation", CMS_OPT_PUBLIC,
     true},
    {"expires-in", NULL, CMS_OPT_DURATION, NULL, "lifetime from now, like 90d, 12h, 30m or 45s",
     CMS_OPT_PUBLIC, false},
    {"expires-at", NULL, CMS_OPT_STRING, NULL, "end of life, RFC 3339 (e.g. 2026-01-31T00:00:00Z)",
     CMS_OPT_PUBLIC, false},
    {"public-key", NULL, CMS_OPT_STRING, NULL, "public_key: the Ed25519 public key, base64",
     CMS_OPT_PUBLIC, false},
    {"measurement", NULL, CMS_OPT_STRING, NULL, "attestation: the enclave's measurement, hex",
     CMS_OPT_PUBLIC, false},
    {"signer", NULL, CMS_OPT_STRING, NULL, "attestation: the enclave's signer", CMS_OPT_PUBLIC,
     false},
    {"metadata", NULL, CMS_OPT_STRING, NULL, "a JSON object kept with the credential",
     CMS_OPT_PUBLIC, false},
};

static const cms_option revoke_options[] = {
    CMSCTL_CMD_OPTIONS,
    {"reason", NULL, CMS_OPT_STRING, NULL, "why (kept with the revocation and in its event)",
     CMS_OPT_PUBLIC, false},
};

static const cms_option clist_options[] = {
    CMSCTL_CMD_OPTIONS,
};

static const cms_option whoami_options[] = {
    CMSCTL_CMD_OPTIONS,
};

static const char identity_help[] =
    "cmsctl identity - identities, kept by cms-identity\n"
    "\n"
    "usage: cmsctl identity create NAME --type user|machine|enclave\n"
    "                              [--metadata JSON] [--roles a,b]\n"
    "       cmsctl identity get ID|NAME\n"
    "       cmsctl identity list [--type T] [--status S] [--limit N] [--after CURSOR] [--all]\n"
    "       cmsctl identity suspend|activate|deactivate ID|NAME [--reason TEXT]\n"
    "\n"
    "cmsctl identity SUB-VERB --help shows the options of each.\n";

static const char credential_help[] =
    "cmsctl credential - credentials of identities, kept by cms-identity\n"
    "\n"
    "usage: cmsctl credential issue ID|NAME --type api_key|public_key|attestation\n"
    "                               (--expires-in DURATION | --expires-at RFC3339)\n"
    "                               [--public-key BASE64] [--measurement HEX --signer TEXT]\n"
    "                               [--metadata JSON]\n"
    "       cmsctl credential revoke CREDENTIAL_ID [--reason TEXT]\n"
    "       cmsctl credential list ID|NAME\n"
    "\n"
    "cmsctl credential SUB-VERB --help shows the options of each.\n";

/* ------------------------------------------------------------------------ */
/* arguments */

/* A JSON object given on the command line; *out is NULL when text is NULL. */
static int object_arg(const char *prog, const char *flag, const char *text, json_t **out)
{
    json_error_t jerr;
    *out = NULL;
    if (text == NULL)
        return CMSCTL_EXIT_OK;
    json_t *v = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (v == NULL)
        return cmsctl_usage(prog, "--%s is not JSON: %s (at character %d)", flag, jerr.text,
                            jerr.position);
    if (!json_is_object(v)) {
        json_decref(v);
        return cmsctl_usage(prog, "--%s must be a JSON object, like {\"team\": \"ops\"}", flag);
    }
    *out = v;
    return CMSCTL_EXIT_OK;
}

/* Adds the comma-separated roles to obj's "roles" array (made if missing),
 * each once, keeping the order they came in. */
static int merge_roles(const char *prog, json_t *obj, const char *roles)
{
    int status = CMSCTL_EXIT_USAGE;
    char *copy = strdup(roles);
    json_t *arr = json_object_get(obj, "roles");
    if (copy == NULL) {
        status = cmsctl_fail(prog, "out of memory");
        goto out;
    }
    if (arr == NULL) {
        arr = json_array();
        if (arr == NULL || json_object_set_new(obj, "roles", arr) != 0) {
            status = cmsctl_fail(prog, "out of memory");
            goto out;
        }
    } else if (!json_is_array(arr)) {
        status = cmsctl_usage(prog, "--metadata has \"roles\" that is not an array: cannot "
                                    "merge --roles into it");
        goto out;
    }
    /* strsep, not strtok_r: "a,,b" has an empty role, a mistake worth naming */
    char *rest = copy, *tok;
    while ((tok = strsep(&rest, ",")) != NULL) {
        while (*tok == ' ' || *tok == '\t')
            tok++;
        size_t len = strlen(tok);
        while (len > 0 && (tok[len - 1] == ' ' || tok[len - 1] == '\t'))
            tok[--len] = '\0';
        if (len == 0) {
            status = cmsctl_usage(prog,
                                  "--roles \"%s\" has an empty role: want names separated "
                                  "by commas, like admin,auditor",
                                  roles);
            goto out;
        }
        bool have = false;
        size_t i;
        json_t *v;
        json_array_foreach(arr, i, v)
        {
            if (json_is_string(v) && strcmp(json_string_value(v), tok) == 0)
                have = true;
        }
        if (!have && json_array_append_new(arr, json_string(tok)) != 0) {
            status = cmsctl_usage(prog, "--roles: role \"%s\" is not valid UTF-8", tok);
            goto out;
        }
    }
    status = CMSCTL_EXIT_OK;
out:
    free(copy);
    return status;
}

/* The metadata to send: --metadata (an object), with --roles merged in;
 * "{}" when neither is given. *out is malloc'd. */
static int metadata_arg(const char *prog, const char *metadata, const char *roles, char **out)
{
    int status = CMSCTL_EXIT_USAGE;
    json_t *obj = NULL;
    if ((status = object_arg(prog, "metadata", metadata, &obj)) != CMSCTL_EXIT_OK)
        goto out;
    if (obj == NULL && (obj = json_object()) == NULL) {
        status = cmsctl_fail(prog, "out of memory");
        goto out;
    }
    if (roles != NULL && (status = merge_roles(prog, obj, roles)) != CMSCTL_EXIT_OK)
        goto out;
    *out = json_dumps(obj, JSON_COMPACT);
    status = *out != NULL ? CMSCTL_EXIT_OK : cmsctl_fail(prog, "out of memory");
out:
    json_decref(obj);
    return status;
}

/* ------------------------------------------------------------------------ */
/* output */

/* The metadata as JSON: the object the service sent, or its text as a
 * string should it not parse. */
static json_t *jmetadata(const char *text)
{
    if (text[0] == '\0')
        return json_object();
    json_t *v = json_loads(text, JSON_DECODE_ANY, NULL);
    return v != NULL ? v : cmsctl_out_str(text);
}

/* The metadata's roles, comma-separated ("-" if none). */
static const char *roles_of(const char *metadata_json, char out[ROLES_TEXT_MAX])
{
    size_t len = 0, i;
    json_t *r;
    out[0] = '\0';
    json_t *m = json_loads(metadata_json, 0, NULL);
    json_t *arr = json_object_get(m, "roles");
    json_array_foreach(arr, i, r)
    {
        if (!json_is_string(r))
            continue;
        int n = snprintf(out + len, ROLES_TEXT_MAX - len, "%s%s", len > 0 ? "," : "",
                         json_string_value(r));
        if (n < 0 || (size_t)n >= ROLES_TEXT_MAX - len) {
            out[len] = '\0';
            break;
        }
        len += (size_t)n;
    }
    json_decref(m);
    if (len == 0)
        snprintf(out, ROLES_TEXT_MAX, "-");
    return out;
}

static json_t *identity_json(const Cms__V1__Identity *id)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    json_object_set_new(o, "id", cmsctl_out_str(id->id));
    json_object_set_new(o, "name", cmsctl_out_str(id->name));
    json_object_set_new(o, "type", cmsctl_out_str(id->type));
    json_object_set_new(o, "status", cmsctl_out_str(id->status));
    json_object_set_new(o, "metadata", jmetadata(id->metadata_json));
    cmsctl_out_time(o, "created_at", id->created_at_us);
    cmsctl_out_time(o, "updated_at", id->updated_at_us);
    return o;
}

static const char *credential_status(const Cms__V1__Credential *c, int64_t now_us)
{
    if (c->revoked_at_us != 0)
        return "revoked";
    if (c->expires_at_us != 0 && c->expires_at_us <= now_us)
        return "expired";
    return "active";
}

/* with_secret: the reply of issue_credential, the only one with a key. */
static json_t *credential_json(const Cms__V1__Credential *c, bool with_secret)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    json_object_set_new(o, "id", cmsctl_out_str(c->id));
    json_object_set_new(o, "identity_id", cmsctl_out_str(c->identity_id));
    json_object_set_new(o, "type", cmsctl_out_str(c->type));
    json_object_set_new(o, "status", json_string(credential_status(c, cmsctl_wall_us())));
    cmsctl_out_time(o, "expires_at", c->expires_at_us);
    cmsctl_out_time(o, "created_at", c->created_at_us);
    cmsctl_out_time(o, "revoked_at", c->revoked_at_us);
    json_object_set_new(o, "metadata", jmetadata(c->metadata_json));
    if (c->public_key[0] != '\0')
        json_object_set_new(o, "public_key", cmsctl_out_str(c->public_key));
    if (c->measurement[0] != '\0')
        json_object_set_new(o, "measurement", cmsctl_out_str(c->measurement));
    if (with_secret && c->api_key[0] != '\0')
        json_object_set_new(o, "api_key", cmsctl_out_str(c->api_key));
    return o;
}

static void identity_table(const Cms__V1__Identity *id)
{
    char b[TEXT_MAX], t[CMSCTL_CMD_TIME_MAX], roles[ROLES_TEXT_MAX];
    printf("id: %s\n", cmsctl_out_clean(id->id, b, sizeof b));
    printf("name: %s\n", cmsctl_out_clean(id->name, b, sizeof b));
    printf("type: %s\n", cmsctl_out_clean(id->type, b, sizeof b));
    printf("status: %s\n", cmsctl_out_clean(id->status, b, sizeof b));
    printf("roles: %s\n", cmsctl_out_clean(roles_of(id->metadata_json, roles), b, sizeof b));
    printf("metadata: %s\n", cmsctl_out_clean(id->metadata_json, b, sizeof b));
    printf("created_at: %s\n", cmsctl_verb_time(id->created_at_us, t));
    printf("updated_at: %s\n", cmsctl_verb_time(id->updated_at_us, t));
}

static void credential_table(const Cms__V1__Credential *c, bool with_secret)
{
    char b[TEXT_MAX], t[CMSCTL_CMD_TIME_MAX];
    printf("id: %s\n", cmsctl_out_clean(c->id, b, sizeof b));
    printf("identity_id: %s\n", cmsctl_out_clean(c->identity_id, b, sizeof b));
    printf("type: %s\n", cmsctl_out_clean(c->type, b, sizeof b));
    printf("status: %s\n", credential_status(c, cmsctl_wall_us()));
    printf("expires_at: %s\n", cmsctl_verb_time(c->expires_at_us, t));
    printf("created_at: %s\n", cmsctl_verb_time(c->created_at_us, t));
    printf("revoked_at: %s\n", cmsctl_verb_time(c->revoked_at_us, t));
    if (c->public_key[0] != '\0')
        printf("public_key: %s\n", cmsctl_out_clean(c->public_key, b, sizeof b));
    if (c->measurement[0] != '\0')
        printf("measurement: %s\n", cmsctl_out_clean(c->measurement, b, sizeof b));
    printf("metadata: %s\n", cmsctl_out_clean(c->metadata_json, b, sizeof b));
    if (with_secret && c->api_key[0] != '\0') {
        printf("api_key: %s\n", cmsctl_out_clean(c->api_key, b, sizeof b));
        sodium_memzero(b, sizeof b);
    }
}

static int print_identity(const char *prog, cmsctl_out_format fmt, const Cms__V1__Identity *id)
{
    if (fmt != CMSCTL_OUT_TABLE)
        return cmsctl_out_emit(prog, fmt, identity_json(id), NULL);
    identity_table(id);
    return CMSCTL_EXIT_OK;
}

/* ------------------------------------------------------------------------ */
/* cmsctl identity ... */

static int create_main(int argc, char **argv)
{
    cmsctl_verb v;
    char *metadata = NULL;
    int status = cmsctl_verb_begin(
        &v, SERVICE, "cmsctl identity create", create_options, CMSCTL_NOPTS(create_options), argc,
        argv, "create an identity",
        "NAME --type user|machine|enclave\n\n"
        "Creates the identity NAME (admins only) and prints it. --roles a,b adds\n"
        "the roles to the metadata's \"roles\" array.\n\n" CMSCTL_CMD_KEY_HELP,
        "the identity's NAME");
    if (status != CMSCTL_EXIT_OK ||
        (status = metadata_arg(v.prog, cms_config_str(v.cfg, "metadata"),
                               cms_config_str(v.cfg, "roles"), &metadata)) != CMSCTL_EXIT_OK ||
        (status = cmsctl_verb_open(&v)) != CMSCTL_EXIT_OK)
        goto out;
    Cms__V1__CreateIdentity req = CMS__V1__CREATE_IDENTITY__INIT;
    req.name = (char *)v.arg;
    req.type = (char *)cms_config_str(v.cfg, "type");
    req.metadata_json = metadata;
    status =
        cmsctl_verb_call(&v, "create", CMSCTL_CMD_WRITE, &req.base, &cms__v1__identity__descriptor);
    if (status == CMSCTL_EXIT_OK)
        status = print_identity(v.prog, v.fmt, (const Cms__V1__Identity *)v.got);
out:
    free(metadata);
    return cmsctl_verb_end(&v, status);
}

static int get_main(int argc, char **argv)
{
    cmsctl_verb v;
    int status =
        cmsctl_verb_begin(&v, SERVICE, "cmsctl identity get", get_options,
                          CMSCTL_NOPTS(get_options), argc, argv, "show one identity",
                          "ID|NAME\n\n"
                          "Prints the identity with that id (a UUID) or, for anything else, "
                          "that\nname.\n\n" CMSCTL_CMD_KEY_HELP,
                          "an identity's ID or NAME");
    if (status == CMSCTL_EXIT_OK && (status = cmsctl_verb_open(&v)) == CMSCTL_EXIT_OK &&
        (status = cmsctl_verb_get_identity(&v, v.arg, &v.got)) == CMSCTL_EXIT_OK)
        status = print_identity(v.prog, v.fmt, (const Cms__V1__Identity *)v.got);
    return cmsctl_verb_end(&v, status);
}

static const Cms__V1__IdentityPage *page_at(ProtobufCMessage *const *pages, size_t i)
{
    return (const Cms__V1__IdentityPage *)pages[i];
}

static int print_identities(const cmsctl_verb *v, ProtobufCMessage *const *pages, size_t n)
{
    if (v->fmt != CMSCTL_OUT_TABLE) {
        json_t *arr = json_array();
        for (size_t i = 0; arr != NULL && i < n; i++) {
            const Cms__V1__IdentityPage *pg = page_at(pages, i);
            for (size_t j = 0; j < pg->n_identities; j++) {
                if (json_array_append_new(arr, identity_json(pg->identities[j])) != 0) {
                    json_decref(arr);
                    arr = NULL;
                    break;
                }
            }
        }
        if (arr != NULL && json_array_size(arr) == 0)
            cmsctl_out_none(v->fmt, "no identities match");
        return cmsctl_out_emit(v->prog, v->fmt, arr, NULL);
    }
    int width = 4;
    size_t rows = 0;
    for (size_t i = 0; i < n; i++) {
        const Cms__V1__IdentityPage *pg = page_at(pages, i);
        for (size_t j = 0; j < pg->n_identities; j++) {
            int len = (int)strlen(pg->identities[j]->name);
            if (len > width)
                width = len < NAME_COLUMN_MAX ? len : NAME_COLUMN_MAX;
            rows++;
        }
    }
    if (rows == 0) {
        cmsctl_out_none(v->fmt, "no identities match");
        return CMSCTL_EXIT_OK;
    }
    printf("%-36s  %-*s  %-8s  %-9s  %-20s  %s\n", "ID", width, "NAME", "TYPE", "STATUS",
           "CREATED_AT", "ROLES");
    for (size_t i = 0; i < n; i++) {
        const Cms__V1__IdentityPage *pg = page_at(pages, i);
        for (size_t j = 0; j < pg->n_identities; j++) {
            const Cms__V1__Identity *id = pg->identities[j];
            char bid[64], bname[TEXT_MAX], btype[64], bstatus[64], t[CMSCTL_CMD_TIME_MAX];
            char roles[ROLES_TEXT_MAX], broles[ROLES_TEXT_MAX];
            printf("%-36s  %-*s  %-8s  %-9s  %-20s  %s\n",
                   cmsctl_out_clean(id->id, bid, sizeof bid), width,
                   cmsctl_out_clean(id->name, bname, sizeof bname),
                   cmsctl_out_clean(id->type, btype, sizeof btype),
                   cmsctl_out_clean(id->status, bstatus, sizeof bstatus),
                   cmsctl_verb_time(id->created_at_us, t),
                   cmsctl_out_clean(roles_of(id->metadata_json, roles), broles, sizeof broles));
        }
    }
    return CMSCTL_EXIT_OK;
}

/* ctx: the int32_t --limit. */
static int ask_identities(cmsctl_verb *v, const void *ctx, const char *after,
                          ProtobufCMessage **page)
{
    Cms__V1__ListIdentities req = CMS__V1__LIST_IDENTITIES__INIT;
    req.type = cmsctl_verb_str(v, "type");
    req.status = cmsctl_verb_str(v, "status");
    req.limit = *(const int32_t *)ctx;
    req.after = (char *)after;
    return cmsctl_cmd_call(v->c, "list", CMSCTL_CMD_READ, &req.base,
                           &cms__v1__identity_page__descriptor, page);
}

static const char *identities_next(const ProtobufCMessage *page, size_t *items)
{
    const Cms__V1__IdentityPage *p = (const Cms__V1__IdentityPage *)page;
    *items = p->n_identities;
    return p->next;
}

static int list_main(int argc, char **argv)
{
    static const cmsctl_verb_pager pager = {ask_identities, identities_next, print_identities};
    cmsctl_verb v;
    int32_t limit = 0;
    int status = cmsctl_verb_begin(
        &v, SERVICE, "cmsctl identity list", list_options, CMSCTL_NOPTS(list_options), argc, argv,
        "list identities",
        "\n\n"
        "Lists identities in the service's order, --limit at a time. When more may\n"
        "follow it ends with \"next: --after CURSOR\" (on stderr with -o json or\n"
        "ndjson): run the same command with that flag added for the next page, or use\n"
        "--all to follow every page. No identities: nothing on stdout (\"[]\" with -o\n"
        "json) and \"(no identities match)\" on stderr.\n\n" CMSCTL_CMD_KEY_HELP,
        NULL);
    if (status == CMSCTL_EXIT_OK && (status = cmsctl_verb_limit(&v, &limit)) == CMSCTL_EXIT_OK &&
        (status = cmsctl_verb_open(&v)) == CMSCTL_EXIT_OK)
        status = cmsctl_verb_list(&v, &pager, &limit);
    return cmsctl_verb_end(&v, status);
}

/* suspend, activate, deactivate: set_status to status. */
static int status_main(int argc, char **argv, const char *prog, const char *summary, const char *to)
{
    cmsctl_verb v;
    char id[CMS_UUID_STRLEN + 1], tail[512];
    snprintf(tail, sizeof tail,
             "ID|NAME [--reason TEXT]\n\n"
             "Sets the identity's status to %s (admins only) and prints it. A NAME is\n"
             "looked up first.\n\n%s",
             to, CMSCTL_CMD_KEY_HELP);
    int status = cmsctl_verb_begin(&v, SERVICE, prog, status_options, CMSCTL_NOPTS(status_options),
                                   argc, argv, summary, tail, "an identity's ID or NAME");
    if (status != CMSCTL_EXIT_OK || (status = cmsctl_verb_open(&v)) != CMSCTL_EXIT_OK ||
        (status = cmsctl_verb_identity_id(&v, v.arg, id)) != CMSCTL_EXIT_OK)
        goto out;
    Cms__V1__SetIdentityStatus req = CMS__V1__SET_IDENTITY_STATUS__INIT;
    req.id = id;
    req.status = (char *)to;
    req.reason = cmsctl_verb_str(&v, "reason");
    status = cmsctl_verb_call(&v, "set_status", CMSCTL_CMD_WRITE, &req.base,
                              &cms__v1__identity__descriptor);
    if (status == CMSCTL_EXIT_OK)
        status = print_identity(v.prog, v.fmt, (const Cms__V1__Identity *)v.got);
out:
    return cmsctl_verb_end(&v, status);
}

int cmsctl_identity_main(int argc, char **argv)
{
    static const char prog[] = "cmsctl identity";
    if (argc < 2) {
        fputs(identity_help, stderr);
        return cmsctl_usage(prog, "%s",
                            "a sub-verb is needed: create, get, list, suspend, activate or "
                            "deactivate");
    }
    const char *sub = argv[1];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0 || strcmp(sub, "help") == 0) {
        fputs(identity_help, stdout);
        return CMSCTL_EXIT_OK;
    }
    if (strcmp(sub, "create") == 0)
        return create_main(argc - 1, argv + 1);
    if (strcmp(sub, "get") == 0)
        return get_main(argc - 1, argv + 1);
    if (strcmp(sub, "list") == 0)
        return list_main(argc - 1, argv + 1);
    if (strcmp(sub, "suspend") == 0)
        return status_main(argc - 1, argv + 1, "cmsctl identity suspend", "suspend an identity",
                           "suspended");
    if (strcmp(sub, "activate") == 0)
        return status_main(argc - 1, argv + 1, "cmsctl identity activate",
                           "make an identity active again", "active");
    if (strcmp(sub, "deactivate") == 0)
        return status_main(argc - 1, argv + 1, "cmsctl identity deactivate",
                           "make an identity inactive", "inactive");
    return cmsctl_usage(prog,
                        "unknown sub-verb \"%s\": want create, get, list, suspend, activate or "
                        "deactivate",
                        sub);
}

/* ------------------------------------------------------------------------ */
/* cmsctl credential ... */

/* expires_at_us from exactly one of --expires-in and --expires-at. */
static int expiry_arg(const char *prog, const cms_config *cfg, int64_t *out)
{
    bool in = cms_config_is_set(cfg, "expires-in");
    const char *at = cms_config_str(cfg, "expires-at");
    int64_t us = 0;
    if (in && at != NULL)
        return cmsctl_usage(prog, "give --expires-in or --expires-at, not both");
    if (!in && at == NULL)
        return cmsctl_usage(prog, "a lifetime is needed: --expires-in (e.g. 90d) or --expires-at "
                                  "(e.g. 2026-01-31T00:00:00Z)");
    if (in) {
        int64_t ms = cms_config_duration_ms(cfg, "expires-in");
        int64_t now = cmsctl_wall_us();
        if (ms <= 0)
            return cmsctl_usage(prog, "--expires-in must be longer than 0 (e.g. 90d, 12h, 30m)");
        if (ms > (INT64_MAX - now) / 1000)
            return cmsctl_usage(prog, "--expires-in is too long: it ends after the year 292277");
        *out = now + ms * 1000;
        return CMSCTL_EXIT_OK;
    }
    if (!cmsctl_cmd_time_parse(at, &us))
        return cmsctl_usage(prog,
                            "--expires-at \"%s\" is not an RFC 3339 time: want e.g. "
                            "2026-01-31T00:00:00Z or 2026-01-31T02:00:00+02:00",
                            at);
    *out = us;
    return CMSCTL_EXIT_OK;
}

static void wipe_key(Cms__V1__Credential *c)
{
    if (c != NULL && c->api_key != NULL)
        sodium_memzero(c->api_key, strlen(c->api_key));
}

static int print_credential(const char *prog, cmsctl_out_format fmt, const Cms__V1__Credential *c,
                            bool with_secret)
{
    if (fmt != CMSCTL_OUT_TABLE)
        return cmsctl_out_emit(prog, fmt, credential_json(c, with_secret),
                               with_secret ? "api_key" : NULL);
    credential_table(c, with_secret);
    return CMSCTL_EXIT_OK;
}

static int issue_main(int argc, char **argv)
{
    cmsctl_verb v;
    char *metadata = NULL;
    char id[CMS_UUID_STRLEN + 1];
    int64_t expires_at_us = 0;
    int status = cmsctl_verb_begin(
        &v, SERVICE, "cmsctl credential issue", issue_options, CMSCTL_NOPTS(issue_options), argc,
        argv, "issue a credential",
        "ID|NAME --type api_key|public_key|attestation (--expires-in D | --expires-at T)\n\n"
        "Issues a credential to the identity (an admin, or the identity itself) and\n"
        "prints it. public_key needs --public-key; attestation needs --measurement and\n"
        "--signer. An api_key's whole key is printed once, here (\"api_key: cms_...\", or\n"
        "\"api_key\" in -o json); it cannot be shown again.\n\n" CMSCTL_CMD_KEY_HELP,
        "the identity's ID or NAME");
    if (status != CMSCTL_EXIT_OK ||
        (status = expiry_arg(v.prog, v.cfg, &expires_at_us)) != CMSCTL_EXIT_OK ||
        (status = metadata_arg(v.prog, cms_config_str(v.cfg, "metadata"), NULL, &metadata)) !=
            CMSCTL_EXIT_OK ||
        (status = cmsctl_verb_open(&v)) != CMSCTL_EXIT_OK ||
        (status = cmsctl_verb_identity_id(&v, v.arg, id)) != CMSCTL_EXIT_OK)
        goto out;
    Cms__V1__IssueCredential req = CMS__V1__ISSUE_CREDENTIAL__INIT;
    req.identity_id = id;
    req.type = (char *)cms_config_str(v.cfg, "type");
    req.expires_at_us = expires_at_us;
    req.metadata_json = metadata;
    req.public_key = cmsctl_verb_str(&v, "public-key");
    req.measurement = cmsctl_verb_str(&v, "measurement");
    req.signer = cmsctl_verb_str(&v, "signer");
    status = cmsctl_verb_call(&v, "issue_credential", CMSCTL_CMD_WRITE, &req.base,
                              &cms__v1__credential__descriptor);
    if (status != CMSCTL_EXIT_OK)
        goto out;
    const Cms__V1__Credential *got = (const Cms__V1__Credential *)v.got;
    status = print_credential(v.prog, v.fmt, got, true);
    fflush(stdout);
    if (got->api_key[0] != '\0')
        fprintf(stderr,
                "%s: the api_key is shown only this once and cannot be retrieved again: store it "
                "now (e.g. in ~/.config/cms/credentials, mode 600)\n",
                v.prog);
out:
    wipe_key((Cms__V1__Credential *)v.got);
    free(metadata);
    return cmsctl_verb_end(&v, status);
}

static int revoke_main(int argc, char **argv)
{
    cmsctl_verb v;
    char id[CMS_UUID_STRLEN + 1];
    int status = cmsctl_verb_begin(
        &v, SERVICE, "cmsctl credential revoke", revoke_options, CMSCTL_NOPTS(revoke_options), argc,
        argv, "revoke a credential",
        "CREDENTIAL_ID [--reason TEXT]\n\n"
        "Revokes the credential (an admin, or the identity it belongs to) and prints\n"
        "it. A revoked API key is refused from then on.\n\n" CMSCTL_CMD_KEY_HELP,
        "CREDENTIAL_ID");
    if (status != CMSCTL_EXIT_OK)
        goto out;
    if (!cmsctl_verb_uuid(v.arg, id)) {
        status = cmsctl_usage(v.prog,
                              "CREDENTIAL_ID \"%s\" is not a UUID: copy it from cmsctl "
                              "credential list",
                              v.arg);
        goto out;
    }
    if ((status = cmsctl_verb_open(&v)) != CMSCTL_EXIT_OK)
        goto out;
    Cms__V1__RevokeCredential req = CMS__V1__REVOKE_CREDENTIAL__INIT;
    req.id = id;
    req.reason = cmsctl_verb_str(&v, "reason");
    status = cmsctl_verb_call(&v, "revoke_credential", CMSCTL_CMD_WRITE, &req.base,
                              &cms__v1__credential__descriptor);
    if (status == CMSCTL_EXIT_OK)
        status = print_credential(v.prog, v.fmt, (const Cms__V1__Credential *)v.got, false);
out:
    return cmsctl_verb_end(&v, status);
}

static int print_credentials(const char *prog, cmsctl_out_format fmt,
                             const Cms__V1__CredentialList *l)
{
    if (fmt != CMSCTL_OUT_TABLE) {
        json_t *arr = json_array();
        for (size_t i = 0; arr != NULL && i < l->n_credentials; i++) {
            if (json_array_append_new(arr, credential_json(l->credentials[i], false)) != 0) {
                json_decref(arr);
                arr = NULL;
            }
        }
        if (l->n_credentials == 0)
            cmsctl_out_none(fmt, "no credentials");
        return cmsctl_out_emit(prog, fmt, arr, NULL);
    }
    if (l->n_credentials == 0) {
        cmsctl_out_none(fmt, "no credentials");
        return CMSCTL_EXIT_OK;
    }
    int64_t now = cmsctl_wall_us();
    printf("%-36s  %-11s  %-7s  %-20s  %-20s  %s\n", "ID", "TYPE", "STATUS", "EXPIRES_AT",
           "CREATED_AT", "REVOKED_AT");
    for (size_t i = 0; i < l->n_credentials; i++) {
        const Cms__V1__Credential *c = l->credentials[i];
        char bid[64], btype[64], t1[CMSCTL_CMD_TIME_MAX], t2[CMSCTL_CMD_TIME_MAX],
            t3[CMSCTL_CMD_TIME_MAX];
        printf("%-36s  %-11s  %-7s  %-20s  %-20s  %s\n", cmsctl_out_clean(c->id, bid, sizeof bid),
               cmsctl_out_clean(c->type, btype, sizeof btype), credential_status(c, now),
               cmsctl_verb_time(c->expires_at_us, t1), cmsctl_verb_time(c->created_at_us, t2),
               cmsctl_verb_time(c->revoked_at_us, t3));
    }
    return CMSCTL_EXIT_OK;
}

static int clist_main(int argc, char **argv)
{
    cmsctl_verb v;
    char id[CMS_UUID_STRLEN + 1];
    int status =
        cmsctl_verb_begin(&v, SERVICE, "cmsctl credential list", clist_options,
                          CMSCTL_NOPTS(clist_options), argc, argv, "list an identity's credentials",
                          "ID|NAME\n\n"
                          "Lists the credentials of the identity (an admin, or the identity "
                          "itself):\nnever a secret.\n\n" CMSCTL_CMD_KEY_HELP,
                          "the identity's ID or NAME");
    if (status != CMSCTL_EXIT_OK || (status = cmsctl_verb_open(&v)) != CMSCTL_EXIT_OK ||
        (status = cmsctl_verb_identity_id(&v, v.arg, id)) != CMSCTL_EXIT_OK)
        goto out;
    Cms__V1__ListCredentials req = CMS__V1__LIST_CREDENTIALS__INIT;
    req.identity_id = id;
    status = cmsctl_verb_call(&v, "list_credentials", CMSCTL_CMD_READ, &req.base,
                              &cms__v1__credential_list__descriptor);
    if (status == CMSCTL_EXIT_OK)
        status = print_credentials(v.prog, v.fmt, (const Cms__V1__CredentialList *)v.got);
out:
    return cmsctl_verb_end(&v, status);
}

int cmsctl_credential_main(int argc, char **argv)
{
    static const char prog[] = "cmsctl credential";
    if (argc < 2) {
        fputs(credential_help, stderr);
        return cmsctl_usage(prog, "%s", "a sub-verb is needed: issue, revoke or list");
    }
    const char *sub = argv[1];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0 || strcmp(sub, "help") == 0) {
        fputs(credential_help, stdout);
        return CMSCTL_EXIT_OK;
    }
    if (strcmp(sub, "issue") == 0)
        return issue_main(argc - 1, argv + 1);
    if (strcmp(sub, "revoke") == 0)
        return revoke_main(argc - 1, argv + 1);
    if (strcmp(sub, "list") == 0)
        return clist_main(argc - 1, argv + 1);
    return cmsctl_usage(prog, "unknown sub-verb \"%s\": want issue, revoke or list", sub);
}

/* ------------------------------------------------------------------------ */
/* cmsctl whoami */

static json_t *principal_json(const Cms__V1__Principal *p)
{
    json_t *o = json_object(), *roles = json_array();
    if (o == NULL || roles == NULL) {
        json_decref(o);
        json_decref(roles);
        return NULL;
    }
    json_object_set_new(o, "identity_id", cmsctl_out_str(p->identity_id));
    json_object_set_new(o, "name", cmsctl_out_str(p->name));
    json_object_set_new(o, "type", cmsctl_out_str(p->type));
    json_object_set_new(o, "status", cmsctl_out_str(p->status));
    for (size_t i = 0; i < p->n_roles; i++)
        json_array_append_new(roles, cmsctl_out_str(p->roles[i]));
    json_object_set_new(o, "roles", roles);
    json_object_set_new(o, "credential_id", cmsctl_out_str(p->credential_id));
    cmsctl_out_time(o, "expires_at", p->expires_at_us);
    return o;
}

static void principal_table(const Cms__V1__Principal *p)
{
    char b[TEXT_MAX], t[CMSCTL_CMD_TIME_MAX], roles[ROLES_TEXT_MAX];
    size_t len = 0;
    roles[0] = '\0';
    for (size_t i = 0; i < p->n_roles; i++) {
        int n = snprintf(roles + len, sizeof roles - len, "%s%s", i > 0 ? "," : "", p->roles[i]);
        if (n < 0 || (size_t)n >= sizeof roles - len) {
            roles[len] = '\0';
            break;
        }
        len += (size_t)n;
    }
    printf("identity_id: %s\n", cmsctl_out_clean(p->identity_id, b, sizeof b));
    printf("name: %s\n", cmsctl_out_clean(p->name, b, sizeof b));
    printf("type: %s\n", cmsctl_out_clean(p->type, b, sizeof b));
    printf("status: %s\n", cmsctl_out_clean(p->status, b, sizeof b));
    printf("roles: %s\n", len > 0 ? cmsctl_out_clean(roles, b, sizeof b) : "-");
    printf("credential_id: %s\n", cmsctl_out_clean(p->credential_id, b, sizeof b));
    printf("expires_at: %s\n", cmsctl_verb_time(p->expires_at_us, t));
}

int cmsctl_whoami_main(int argc, char **argv)
{
    cmsctl_verb v;
    Cms__V1__Principal *who = NULL;
    int status =
        cmsctl_verb_begin(&v, SERVICE, "cmsctl whoami", whoami_options,
                          CMSCTL_NOPTS(whoami_options), argc, argv, "who the API key belongs to",
                          "\n\n"
                          "Asks cms-identity (authenticate) whom the configured API key belongs\n"
                          "to and prints it: the identity's id, name, type, status and roles, the\n"
                          "credential's id and when it expires. A key the service refuses\n"
                          "(unknown, revoked, expired, or its identity not active) is an error,\n"
                          "exit status 1.\n\n" CMSCTL_CMD_KEY_HELP,
                          NULL);
    if (status != CMSCTL_EXIT_OK || (status = cmsctl_verb_open(&v)) != CMSCTL_EXIT_OK)
        goto out;
    if ((status = cmsctl_cmd_whoami(v.c, &who)) != CMSCTL_EXIT_OK)
        goto out;
    if (v.fmt != CMSCTL_OUT_TABLE)
        status = cmsctl_out_emit(v.prog, v.fmt, principal_json(who), NULL);
    else
        principal_table(who);
out:
    if (who != NULL)
        cms__v1__principal__free_unpacked(who, NULL);
    return cmsctl_verb_end(&v, status);
}
