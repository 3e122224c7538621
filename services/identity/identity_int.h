/* What the command files of cms-identity share (identity.c: identities;
 * credentials.c: credentials; authn.c: who is acting). */
#ifndef IDENTITY_INT_H
#define IDENTITY_INT_H

#include "expiry.h"
#include "identity.h"
#include "identity/events.h"
#include "identity/store.h"
#include "metrics.h"
#include "negcache.h"

#include <stdbool.h>

struct idsvc {
    idsvc_options o;
    cms_service *svc;
    cms_pg *pg;
    cms_outbox *outbox;
    cms_auth *auth;
    idexp *expiry;
    const cms_pg_stmt *st_auth, *st_create;
    /* compared with when a key's credential is unknown, so that every
     * refusal costs one hash */
    char dummy_hash[CMS_APIKEY_HASH_LEN + 1];
    /* authentication's look-ups (authn.c): those in flight by credential
     * id, and the ids found not to exist a moment ago */
    struct lookup *lookups;
    size_t nlookups;
    idneg *unknown;
    cms_nats_sub *issued_sub; /* credential.issued: forget those ids */
    cms_counter *m_lookups, *m_negative_hits, *m_lookups_refused;
    void (*drained)(void *arg);
    void *drained_arg;
};

const char *idsvc_correlation(cms_cmd_req *req);
bool idsvc_is_admin(cms_cmd_req *req);
bool idsvc_is_self(cms_cmd_req *req, const char *identity_id);

void idsvc_fail_invalid(cms_cmd_req *req, const idv_err *e);
void idsvc_fail_oom(cms_cmd_req *req);

/* Rows as protobuf messages (strings point into r, valid while r is). */
int64_t idsvc_i64(const PGresult *r, int row, int col);
void idsvc_row_identity(const PGresult *r, int row, Cms__V1__Identity *out);
/* Never the stored value of an api_key: it is a hash, and of no use to anyone. */
void idsvc_row_credential(const PGresult *r, int row, Cms__V1__Credential *out);

/* A read of one statement with one parameter, submitted; false after
 * answering req (the caller then frees what it passed as arg). */
bool idsvc_read_one(idsvc *s, cms_cmd_req *req, const char *sql, const char *param,
                    cms_pg_done_cb done, void *arg);
/* Submits a read job (taken in every case); false as for idsvc_read_one. */

/* A credential with this id exists from now on: it is not unknown. */
void idsvc_credential_issued(idsvc *s, const char *cred_id);
/* Subscribes to credential.issued (a credential another replica issued
 * is not unknown here either) and makes the metrics; 0 or -1. */
int idsvc_authn_start(idsvc *s);
void idsvc_authn_stop(idsvc *s);

/* The verbs of each file. */
idsvc_err idsvc_register_identities(idsvc *s, cms_cmd *c);
idsvc_err idsvc_register_credentials(idsvc *s, cms_cmd *c);
idsvc_err idsvc_register_authn(idsvc *s, cms_cmd *c);

#endif
