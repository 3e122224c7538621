/* Request-reply over NATS from the loop: a request is a core publish with a
 * reply subject under this process's own inbox, and its answer (or its
 * deadline) comes back to a callback on the loop. One subscription serves
 * every request ("<inbox prefix>.<random>.*", from cms_nats_inbox, so it
 * is "_INBOX.<user>..." with password credentials); a reply that comes
 * after the deadline is dropped. */
#ifndef CMS_REQUEST_H
#define CMS_REQUEST_H

#include "nats.h"
#include "xenum.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct cms_request cms_request;

#define CMS_REQUEST_ERRORS(X)                                                                      \
    X(CMS_REQUEST_OK, "ok")                                                                        \
    X(CMS_REQUEST_ETIMEOUT, "no reply in time")                                                    \
    X(CMS_REQUEST_ENORESPONDERS, "nobody listens on the subject")                                  \
    X(CMS_REQUEST_ECLOSED, "the requester is closed")                                              \
    X(CMS_REQUEST_EBUSY, "the NATS connection's queue is full; retry")                             \
    X(CMS_REQUEST_EINVAL, "invalid argument")                                                      \
    X(CMS_REQUEST_ENOMEM, "out of memory")                                                         \
    X(CMS_REQUEST_ENATS, "the reply subscription could not be made")

typedef enum { CMS_REQUEST_ERRORS(CMS_ENUM_ITEM) CMS_REQUEST_NERRORS } cms_request_err;
const char *cms_request_strerror(cms_request_err e);

/* On the loop, exactly once per accepted request: CMS_REQUEST_OK with the
 * reply's bytes (valid during the call), ETIMEOUT when no reply came in
 * time, ENORESPONDERS when nobody listens on the subject (the server's "no
 * responders"), ECLOSED when the requester closed. */
typedef void (*cms_request_cb)(void *arg, cms_request_err err, const void *data, size_t len);

cms_request_err cms_request_create(uv_loop_t *loop, cms_nats *nats, cms_request **out)
    __attribute__((warn_unused_result));

/* headers: NULL or key, value, ..., NULL. Returns CMS_REQUEST_OK (cb will
 * be called) or another error (cb will not be called). */
cms_request_err cms_request_send(cms_request *r, const char *subject, const char *const *headers,
                                 const void *data, size_t len, int64_t timeout_ms,
                                 cms_request_cb cb, void *arg) __attribute__((warn_unused_result));

/* Requests waiting for an answer now. */
size_t cms_request_pending(const cms_request *r);

/* Answers every pending request with CMS_REQUEST_ECLOSED (on a later loop
 * turn), unsubscribes, and calls closed(arg) once its handles are closed. */
void cms_request_close(cms_request *r, void (*closed)(void *arg), void *arg);
void cms_request_destroy(cms_request *r); /* after closed; NULL-safe */

#endif
