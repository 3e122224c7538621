/* cms-audit's commands: query, the audit log read a page at a time
 * (cms.cmd.audit.query, proto/cms/v1/audit.proto).
 *
 * The request is checked and the caller's reach applied by query_args;
 * the statement is assembled from fixed fragments only, every value a
 * parameter, and reads rows in (created_at, id) order after the cursor,
 * one more than the limit to tell whether another page follows. Each row
 * of the page is bounded (details over AUDIT_QUERY_DETAILS_MAX are left
 * out) and so is the page (it ends once its records reach
 * AUDIT_QUERY_PAGE_BYTES, with a cursor to go on), so that a reply stays
 * well under NATS's max_payload (1 MiB by default) whatever the rows hold.
 *
 * Reads only: the service serves it with read_only_commands, so nothing
 * of a reply is kept for request_ids. */
#ifndef AUDIT_QUERY_H
#define AUDIT_QUERY_H

#include "cmd.h"
#include "pg.h"

#define AUDIT_QUERY_DETAILS_MAX (64 * 1024) /* cms-audit never stores more (validate.h) */
#define AUDIT_QUERY_PAGE_BYTES (512 * 1024)

/* Registers the verbs on c; their statements run on pg. */
cms_cmd_err audit_query_register(cms_cmd *c, cms_pg *pg) __attribute__((warn_unused_result));

#endif
