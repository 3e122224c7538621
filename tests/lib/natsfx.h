/* Tests of code on a loop against the real nats-server (CMS_TEST_NATS_URL):
 * a loop with a watchdog and a cms_nats under test, whose handlers count
 * the calls made off the loop's thread; a blocking nats.c connection (the
 * "side" connection) that prepares and reads server state outside the
 * loop; and streams made the way the services provision them.
 *
 * Everything here blocks and asserts (Criterion): test code only. */
#ifndef CMS_NATSFX_H
#define CMS_NATSFX_H

#include "nats.h"

#include <nats/nats.h>
#include <stdint.h>
#include <uv.h>

typedef struct natsfx {
    uv_loop_t loop;
    uv_timer_t watchdog;
    uv_thread_t loop_thread;
    cms_nats *n;
    int closed;       /* close callbacks run */
    int wrong_thread; /* natsfx_check_thread calls off the loop's thread */
    char tag[32];     /* "<tag><pid>": where the test's subjects start */
} natsfx;

/* Logging as name at warn, a loop whose watchdog fails the test after
 * timeout_ms, and f->n connecting to the test server. opts: NULL for the
 * defaults; its url is the test server's whatever it says, its name name
 * if NULL. tag: the tag's prefix ("t": "t<pid>"). */
void natsfx_init(natsfx *f, const char *name, const char *tag, int64_t timeout_ms,
                 const cms_nats_options *opts);
/* The same against the server at url (a natsauthfx's, say) with opts' other
 * settings (its security among them). */
void natsfx_init_at(natsfx *f, const char *url, const char *name, const char *tag,
                    int64_t timeout_ms, const cms_nats_options *opts);
/* For every handler: counts a call made off the loop's thread. */
void natsfx_check_thread(natsfx *f);
/* Closes f->n; natsfx_finish's loop ends once it is closed. */
void natsfx_close(natsfx *f);
/* Runs the loop until everything is closed, checks that f->n was closed
 * once and no handler ran off the loop's thread, then frees f->n and the
 * loop. */
void natsfx_finish(natsfx *f);

/* The side connection (blocking; never used inside the loop). */
typedef struct natsfx_side {
    natsConnection *nc;
    jsCtx *js;
} natsfx_side;

void natsfx_side_open(natsfx_side *s);
void natsfx_side_close(natsfx_side *s);
/* Stream name on subject (file storage; max_age_ms 0: no limit), made
 * afresh: one of that name left over is deleted first. */
void natsfx_side_stream(natsfx_side *s, const char *name, const char *subject, int64_t max_age_ms);
/* Stream name's info (jsStreamInfo_Destroy). */
jsStreamInfo *natsfx_side_info(natsfx_side *s, const char *name);
/* Publishes count messages "<i>" (i from 0) on subject with msg ids
 * "<subject>-<i>" and headers (NULL or key, value, ..., NULL), waiting for
 * all acks. */
void natsfx_side_fill(natsfx_side *s, const char *subject, int count, const char *const *headers);
/* Deletes stream name if it exists. */
void natsfx_side_drop_stream(natsfx_side *s, const char *name);

/* Stream name on subject (file storage; max_age_ms and duplicates_ms 0: the
 * server's defaults) unless one of that name exists, which is left as it
 * is: for streams other tests share, such as CMS_EVENTS. */
void natsfx_stream_ensure(jsCtx *js, const char *name, const char *subject, int64_t max_age_ms,
                          int64_t duplicates_ms);

#endif
