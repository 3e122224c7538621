/* libFuzzer target for cms-contracts' commands: byte 0 picks the verb
 * (create, update, get, canonical, list, submit, activate, complete,
 * terminate, amend, sign), the rest is the body, decoded as cms_cmd
 * decodes it (cmdfuzz.h) and checked as the verb's handler checks it
 * before and around its database work: the contracts/validate.h checks in
 * the handler's order, the handler's own limits, and for what carries
 * terms, the terms check and the canonical form (RFC 8785) the content
 * hash is taken of, which the handler computes after reading the stored
 * contract (here a stored title and description stand in).
 *
 * Nothing may crash or leak. A refusal names a field of the request (or a
 * path into its terms) and says why; checking the same body again gives
 * the same verdict; accepted terms start before they end, and a contract
 * whose fields and terms pass has a canonical form, which is a fixed point
 * of canonicalisation: a create or change that passes its checks never
 * fails later for want of one. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmdfuzz.h"
#include "cms/v1/contracts.pb-c.h"
#include "contracts/canonical.h"
#include "contracts/validate.h"
#include "jcs.h"
#include "uuid.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define LIST_MAX 1000 /* contracts.c */
#define ID "00000000-0000-7000-8000-000000000001"
#define PROVIDER "00000000-0000-7000-8000-000000000002"
#define CONSUMER "00000000-0000-7000-8000-000000000003"

enum {
    V_CREATE,
    V_UPDATE,
    V_GET,
    V_CANONICAL,
    V_LIST,
    V_SUBMIT,
    V_ACTIVATE,
    V_COMPLETE,
    V_TERMINATE,
    V_AMEND,
    V_SIGN,
    NVERBS
};
static const fz_verb verbs[NVERBS] = {
    [V_CREATE] = {"create", &cms__v1__create_contract__descriptor},
    [V_UPDATE] = {"update", &cms__v1__update_contract__descriptor},
    [V_GET] = {"get", &cms__v1__contract_ref__descriptor},
    [V_CANONICAL] = {"canonical", &cms__v1__contract_ref__descriptor},
    [V_LIST] = {"list", &cms__v1__list_contracts__descriptor},
    [V_SUBMIT] = {"submit", &cms__v1__contract_ref__descriptor},
    [V_ACTIVATE] = {"activate", &cms__v1__contract_ref__descriptor},
    [V_COMPLETE] = {"complete", &cms__v1__contract_ref__descriptor},
    [V_TERMINATE] = {"terminate", &cms__v1__terminate_contract__descriptor},
    [V_AMEND] = {"amend", &cms__v1__amend_contract__descriptor},
    [V_SIGN] = {"sign", &cms__v1__sign_contract__descriptor},
};

typedef struct verdict {
    bool ok;
    bool field_required;
    cv_err e;
} verdict;

static bool refuse(verdict *v, const char *field, const char *msg)
{
    v->field_required = false;
    snprintf(v->e.field, sizeof v->e.field, "%s", field ? field : "");
    snprintf(v->e.msg, sizeof v->e.msg, "%s", msg);
    return false;
}

static void uuid_holds(const char *s)
{
    cms_uuid u;
    if (!cms_uuid_parse(s, strlen(s), &u))
        abort();
}

static void terms_hold(const char *json, const cv_terms *t)
{
    cv_terms again;
    cv_err e;
    if (t->starts_at_us >= t->ends_at_us || !cv_terms_check(json, &again, &e) ||
        again.starts_at_us != t->starts_at_us || again.ends_at_us != t->ends_at_us ||
        again.has_max_epsilon != t->has_max_epsilon ||
        (t->has_max_epsilon && again.max_epsilon != t->max_epsilon) ||
        (t->has_max_epsilon && !(t->max_epsilon > 0 && isfinite(t->max_epsilon))))
        abort();
}

/* ctsvc_content_hash: the canonical form exists, and canonicalises to itself */
static bool canonical(const char *title, const char *desc, const char *terms, verdict *v)
{
    char *out = NULL, *again = NULL;
    size_t n = 0, n2 = 0;
    cms_jcs_err err = cc_canonical(ID, title, desc, PROVIDER, CONSUMER, terms, &out, &n);
    if (err == CMS_JCS_ENOMEM)
        abort();
    if (err != CMS_JCS_OK)
        return refuse(v, "terms_json", "the contract has no canonical form (RFC 8785)");
    if (cms_jcs_canonicalize(out, n, &again, &n2) != CMS_JCS_OK || n2 != n ||
        memcmp(out, again, n) != 0)
        abort();
    free(out);
    free(again);
    return true;
}

/* the terms of a change (update's decide, amend's add_amend) */
static bool changed_terms(const char *title, const char *desc, const char *terms, verdict *v)
{
    cv_terms t;
    v->field_required = true;
    if (!cv_terms_check(terms, &t, &v->e))
        return false;
    terms_hold(terms, &t);
    return canonical(title, desc, terms, v);
}

static bool check_create(const Cms__V1__CreateContract *m, verdict *v)
{
    cv_terms t;
    const char *md;
    v->field_required = true;
    if (!cv_title(m->title, &v->e) || !cv_description(m->description, &v->e) ||
        !cv_uuid(m->provider_id, "provider_id", &v->e) ||
        !cv_uuid(m->consumer_id, "consumer_id", &v->e) ||
        !cv_terms_check(m->terms_json, &t, &v->e) ||
        !cv_metadata(m->metadata_json, "metadata_json", &md, &v->e))
        return false;
    if (strcmp(m->provider_id, m->consumer_id) == 0)
        return refuse(v, "consumer_id", "the provider and the consumer must be two identities");
    uuid_holds(m->provider_id);
    uuid_holds(m->consumer_id);
    terms_hold(m->terms_json, &t);
    if ((m->metadata_json[0] ? md != m->metadata_json : strcmp(md, "{}") != 0) ||
        !fz_json_object(md))
        abort();
    return canonical(m->title, m->description, m->terms_json, v);
}

static bool check_update(const Cms__V1__UpdateContract *m, verdict *v)
{
    const char *md = NULL;
    v->field_required = true;
    if (!cv_uuid(m->id, "id", &v->e) || (m->title[0] && !cv_title(m->title, &v->e)) ||
        !cv_description(m->description, &v->e) ||
        (m->metadata_json[0] && !cv_metadata(m->metadata_json, "metadata_json", &md, &v->e)))
        return false;
    if (!m->title[0] && !m->description[0] && !m->clear_description && !m->terms_json[0] &&
        md == NULL)
        return refuse(v, NULL, "nothing to change");
    if (!m->terms_json[0])
        return true; /* the stored terms passed when they were stored */
    const char *title = m->title[0] ? m->title : "a stored title";
    const char *desc = m->clear_description ? ""
                       : m->description[0]  ? m->description
                                            : "a stored description";
    return changed_terms(title, desc, m->terms_json, v);
}

static bool check_ref(const Cms__V1__ContractRef *m, verdict *v)
{
    v->field_required = true;
    if (!cv_uuid(m->id, "id", &v->e))
        return false;
    uuid_holds(m->id);
    return true;
}

static bool check_list(const Cms__V1__ListContracts *m, verdict *v)
{
    cv_status st;
    v->field_required = true;
    if ((m->party_id[0] && !cv_uuid(m->party_id, "party_id", &v->e)) ||
        (m->status[0] && !cv_status_parse(m->status, "status", &st, &v->e)) ||
        (m->after[0] && !cv_uuid(m->after, "after", &v->e)))
        return false;
    if (m->limit < 0 || m->limit > LIST_MAX)
        return refuse(v, "limit", "limit must be 1 to 1000 (0: 100)");
    if (m->created_after_us < 0 || m->created_before_us < 0 ||
        (m->created_before_us && m->created_after_us >= m->created_before_us))
        return refuse(v, "created_before_us", "the creation range must end after it starts");
    if (m->status[0] && strcmp(cv_status_name(st), m->status) != 0)
        abort();
    return true;
}

static bool check_terminate(const Cms__V1__TerminateContract *m, verdict *v)
{
    v->field_required = true;
    if (!cv_reason(m->reason, true, &v->e) || !cv_uuid(m->id, "id", &v->e))
        return false;
    if (m->reason[0] == '\0' || strlen(m->reason) > CV_REASON_MAX || !fz_utf8(m->reason))
        abort();
    return true;
}

static bool check_amend(const Cms__V1__AmendContract *m, verdict *v)
{
    const char *md = NULL;
    v->field_required = true;
    if ((m->title[0] && !cv_title(m->title, &v->e)) || !cv_description(m->description, &v->e) ||
        (m->metadata_json[0] && !cv_metadata(m->metadata_json, "metadata_json", &md, &v->e)))
        return false;
    if (!m->title[0] && !m->description[0] && !m->terms_json[0] && md == NULL)
        return refuse(v, NULL, "an amendment changes something");
    v->field_required = true;
    if (!cv_uuid(m->id, "id", &v->e))
        return false;
    if (!m->terms_json[0])
        return true;
    const char *title = m->title[0] ? m->title : "a stored title";
    const char *desc = m->description[0] ? m->description : "a stored description";
    return changed_terms(title, desc, m->terms_json, v);
}

static bool check_sign(const Cms__V1__SignContract *m, verdict *v)
{
    v->field_required = true;
    if (!cv_uuid(m->id, "id", &v->e) || !cv_uuid(m->key_id, "key_id", &v->e))
        return false;
    size_t n = strlen(m->signature);
    if (n == 0 || n > CC_SIG_B64URL_MAX)
        return refuse(v, "signature", "a signature is base64url (no padding) of 64 bytes");
    if (m->side[0] && strcmp(m->side, "provider") != 0 && strcmp(m->side, "consumer") != 0)
        return refuse(v, "side", "side is provider or consumer (or empty: your own)");
    return true;
}

static bool check(int verb, const ProtobufCMessage *body, verdict *v)
{
    memset(v, 0, sizeof *v);
    switch (verb) {
    case V_CREATE:
        return v->ok = check_create((const void *)body, v);
    case V_UPDATE:
        return v->ok = check_update((const void *)body, v);
    case V_GET:
    case V_CANONICAL:
    case V_SUBMIT:
    case V_ACTIVATE:
    case V_COMPLETE:
        return v->ok = check_ref((const void *)body, v);
    case V_LIST:
        return v->ok = check_list((const void *)body, v);
    case V_TERMINATE:
        return v->ok = check_terminate((const void *)body, v);
    case V_AMEND:
        return v->ok = check_amend((const void *)body, v);
    case V_SIGN:
        return v->ok = check_sign((const void *)body, v);
    }
    abort();
}

FZ_CMD_TARGET
