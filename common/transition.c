/* State transitions of stored objects; see transition.h. */
#include "transition.h"

#include <stdlib.h>

#define ATTEMPTS 3

typedef struct run {
    cms_pg *pg;
    cms_cmd_req *req;
    const cms_transition_ops *ops;
    void *op;
    int attempt;
} run;

static void end(run *r)
{
    if (r->ops->release)
        r->ops->release(r->op);
    else
        free(r->op);
    free(r);
}

static void read_state(run *r);

static void written(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    run *r = arg;
    if (err != CMS_PG_OK) {
        cms_cmd_fail_pg(r->req, err, res, r->ops->what);
    } else if (!r->ops->written(r->op, r->req, res)) {
        /* changed by someone else since it was read: read it again */
        if (++r->attempt < ATTEMPTS) {
            read_state(r);
            return;
        }
        cms_cmd_fail(r->req, CMS__V1__ERROR_CODE__UNAVAILABLE, NULL, "the %s keeps changing; retry",
                     r->ops->object);
    }
    end(r);
}

static void was_read(void *arg, cms_pg_err err, const cms_pg_result *res)
{
    run *r = arg;
    if (err != CMS_PG_OK) {
        cms_cmd_fail_pg(r->req, err, res, r->ops->what);
        end(r);
        return;
    }
    cms_pg_job *job = cms_cmd_job_new(r->req);
    if (job == NULL) {
        cms_cmd_fail(r->req, CMS__V1__ERROR_CODE__INTERNAL, NULL, "out of memory");
        end(r);
        return;
    }
    if (r->ops->decide(r->op, r->req, res, job) != CMS_TRANSITION_WRITE) {
        cms_pg_job_free(job);
        end(r);
        return;
    }
    cms_pg_err serr = cms_cmd_submit(r->req, &job, written, r);
    if (serr != CMS_PG_OK) {
        cms_cmd_fail_pg(r->req, serr, NULL, r->ops->what);
        end(r);
    }
}

static void read_state(run *r)
{
    cms_pg_job *job = cms_pg_job_new();
    if (job == NULL || r->ops->read(r->op, job) != CMS_PG_OK) {
        cms_pg_job_free(job);
        cms_cmd_fail(r->req, CMS__V1__ERROR_CODE__INTERNAL, NULL, "out of memory");
        end(r);
        return;
    }
    cms_pg_err err = cms_pg_submit(r->pg, &job, was_read, r);
    if (err != CMS_PG_OK) {
        cms_cmd_fail_pg(r->req, err, NULL, r->ops->what);
        end(r);
    }
}

void cms_transition_run(cms_pg *pg, cms_cmd_req *req, const cms_transition_ops *ops, void *op)
{
    run *r = calloc(1, sizeof *r);
    if (r == NULL) {
        cms_cmd_fail(req, CMS__V1__ERROR_CODE__INTERNAL, NULL, "out of memory");
        if (ops->release)
            ops->release(op);
        else
            free(op);
        return;
    }
    *r = (run){.pg = pg, .req = req, .ops = ops, .op = op};
    read_state(r);
}
