/*
 * nf_http_route: the route table and dispatch. Patterns such as "/api/jobs/{job_id}" are
 * split into segments once, at registration; each request target is split into decoded
 * path segments and query pairs, then matched: a literal segment beats a {param}, leftmost
 * first; no route for the path -> 404; the path known but not the method -> 405 + Allow.
 */
#include "nf_http_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "nf_log.h"
#include "nf_mem.h"

/* Request methods by name: for routes, logs, metrics and Allow. */
static const struct {
    enum evhttp_cmd_type type;
    const char *name;
} methods[] = {
    {EVHTTP_REQ_GET, "GET"},         {EVHTTP_REQ_POST, "POST"},   {EVHTTP_REQ_PUT, "PUT"},
    {EVHTTP_REQ_DELETE, "DELETE"},   {EVHTTP_REQ_PATCH, "PATCH"}, {EVHTTP_REQ_HEAD, "HEAD"},
    {EVHTTP_REQ_OPTIONS, "OPTIONS"}, {EVHTTP_REQ_TRACE, "TRACE"}, {EVHTTP_REQ_CONNECT, "CONNECT"},
};

const char *nf_http_method_name(enum evhttp_cmd_type type)
{
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (methods[i].type == type)
            return methods[i].name;
    return "OTHER";
}

/* ---- routes ------------------------------------------------------------------------- */

void nf_http_route_free(struct route *rt)
{
    if (rt == NULL)
        return;
    for (size_t i = 0; i < rt->nsegs; i++)
        free(rt->segs[i]);
    free(rt->segs);
    free(rt->is_param);
    free(rt->pattern);
    free(rt);
}

/* Splits a pattern into segments; -1 when malformed. A trailing '/' is ignored. */
static int route_parse(struct route *rt, const char *pattern)
{
    const char *p;
    size_t len;

    if (pattern == NULL || pattern[0] != '/')
        return -1;
    p = pattern + 1;
    len = strlen(p);
    if (len > 0 && p[len - 1] == '/')
        len--;
    if (len == 0) {
        if (strlen(pattern) > 1 && pattern[1] == '/')
            return -1; /* "//" */
        return 0;
    }
    for (size_t start = 0; start <= len;) {
        const char *seg = p + start;
        const char *slash = memchr(seg, '/', len - start);
        size_t n = slash != NULL ? (size_t)(slash - seg) : len - start;
        bool param = n >= 2 && seg[0] == '{' && seg[n - 1] == '}';

        if (n == 0 || (param && n == 2))
            return -1;
        if (!param && (memchr(seg, '{', n) != NULL || memchr(seg, '}', n) != NULL))
            return -1;
        rt->segs = nf_xrealloc(rt->segs, (rt->nsegs + 1) * sizeof(*rt->segs));
        rt->is_param = nf_xrealloc(rt->is_param, (rt->nsegs + 1) * sizeof(*rt->is_param));
        rt->segs[rt->nsegs] = param ? nf_xstrndup(seg + 1, n - 2) : nf_xstrndup(seg, n);
        rt->is_param[rt->nsegs] = param;
        rt->nsegs++;
        start += n + 1;
    }
    return 0;
}

static bool route_same_shape(const struct route *a, const struct route *b)
{
    if (a->method != b->method || a->nsegs != b->nsegs)
        return false;
    for (size_t i = 0; i < a->nsegs; i++) {
        if (a->is_param[i] != b->is_param[i])
            return false;
        if (!a->is_param[i] && strcmp(a->segs[i], b->segs[i]) != 0)
            return false;
    }
    return true;
}

static bool route_matches(const struct route *rt, char **segs, size_t nsegs)
{
    if (rt->nsegs != nsegs)
        return false;
    for (size_t i = 0; i < nsegs; i++) {
        if (rt->is_param[i] ? segs[i][0] == '\0' : strcmp(rt->segs[i], segs[i]) != 0)
            return false;
    }
    return true;
}

/* true when a is more specific than b: a literal where b has a parameter, leftmost first. */
static bool route_more_specific(const struct route *a, const struct route *b)
{
    for (size_t i = 0; i < a->nsegs; i++)
        if (a->is_param[i] != b->is_param[i])
            return !a->is_param[i];
    return false;
}

/* Registers a route; stream: its body is streamed, bounded by max_body. */
static int route_add(struct nf_http_server *srv, const char *method, const char *pattern,
                     nf_http_handler fn, void *arg, bool stream, uint64_t max_body)
{
    struct route *rt;
    size_t i;

    if (srv == NULL || method == NULL || fn == NULL)
        return -1;
    rt = nf_xcalloc(1, sizeof(*rt));
    for (i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        if (strcmp(methods[i].name, method) == 0) {
            rt->method = methods[i].type;
            rt->method_name = methods[i].name;
        }
    }
    if (rt->method_name == NULL || route_parse(rt, pattern) != 0) {
        nf_log_kv(NF_LOG_ERROR, "http_route_invalid", "invalid route", "method", method, "pattern",
                  pattern, NULL);
        goto err;
    }
    for (i = 0; i < srv->nroutes; i++) {
        if (route_same_shape(srv->routes[i], rt)) {
            nf_log_kv(NF_LOG_ERROR, "http_route_duplicate", "route already registered", "method",
                      method, "pattern", pattern, "existing", srv->routes[i]->pattern, NULL);
            goto err;
        }
    }
    rt->pattern = nf_xstrdup(pattern);
    rt->fn = fn;
    rt->arg = arg;
    rt->stream = stream;
    rt->max_body = max_body;
    srv->has_stream_routes |= stream;
    rt->duration = nf_http_route_histogram(srv, pattern);
    srv->routes = nf_xrealloc(srv->routes, (srv->nroutes + 1) * sizeof(struct route *));
    srv->routes[srv->nroutes++] = rt;
    return 0;

err:
    nf_http_route_free(rt);
    return -1;
}

int nf_http_route(struct nf_http_server *srv, const char *method, const char *pattern,
                  nf_http_handler fn, void *arg)
{
    return route_add(srv, method, pattern, fn, arg, false, 0);
}

int nf_http_route_stream(struct nf_http_server *srv, const char *method, const char *pattern,
                         nf_http_handler fn, void *arg, uint64_t max_body)
{
    return route_add(srv, method, pattern, fn, arg, true, max_body);
}

/* ---- dispatch ----------------------------------------------------------------------- */

/* Percent-decodes s[0..n) ('+' as space when plus); NULL when it decodes to a NUL byte. */
static char *decode(const char *s, size_t n, bool plus)
{
    char *tmp = nf_xstrndup(s, n);
    size_t len = 0;
    char *out = evhttp_uridecode(tmp, plus ? 1 : 0, &len);
    free(tmp);
    if (out == NULL)
        abort();
    if (strlen(out) != len) {
        free(out);
        return NULL;
    }
    return out;
}

static void segs_free(char **segs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(segs[i]);
    free(segs);
}

/*
 * Splits the raw path ("/a/b%2Fc/") into decoded segments ("a", "b/c"); a trailing '/'
 * is ignored, "/" has none. -1 when a segment decodes to a NUL byte.
 */
static int split_path(const char *path, char ***out, size_t *nout)
{
    const char *p = path + 1;
    size_t len = strlen(p);
    char **segs = NULL;
    size_t n = 0;

    if (len > 0 && p[len - 1] == '/')
        len--;
    if (len == 0 && strlen(path) <= 1) {
        *out = NULL;
        *nout = 0;
        return 0;
    }
    for (size_t start = 0; start <= len;) {
        const char *seg = p + start;
        const char *slash = len > start ? memchr(seg, '/', len - start) : NULL;
        size_t sn = slash != NULL ? (size_t)(slash - seg) : len - start;
        char *dec = decode(seg, sn, false);

        if (dec == NULL) {
            segs_free(segs, n);
            return -1;
        }
        segs = nf_xrealloc(segs, (n + 1) * sizeof(*segs));
        segs[n++] = dec;
        start += sn + 1;
    }
    *out = segs;
    *nout = n;
    return 0;
}

/* Decodes "a=1&b=x%20y" (q may be NULL) into req->query; -1 when something decodes to a
 * NUL byte. */
static int parse_query(struct nf_http_req *req, const char *q)
{
    char *copy, *rest, *piece;
    int rc = 0;

    if (q == NULL)
        return 0;
    copy = rest = nf_xstrdup(q);
    while ((piece = strsep(&rest, "&")) != NULL) {
        char *eq = strchr(piece, '=');
        const char *val = "";
        char *name, *value;

        if (piece[0] == '\0')
            continue;
        if (eq != NULL) {
            *eq = '\0';
            val = eq + 1;
        }
        name = decode(piece, strlen(piece), true);
        value = decode(val, strlen(val), true);
        if (name == NULL || value == NULL) {
            free(name);
            free(value);
            rc = -1;
            break;
        }
        if (name[0] == '\0') {
            free(name);
            free(value);
            continue;
        }
        req->query = nf_xrealloc(req->query, (req->nquery + 1) * sizeof(*req->query));
        req->query[req->nquery].name = name;
        req->query[req->nquery].value = value;
        req->nquery++;
    }
    free(copy);
    return rc;
}

/*
 * Sets req->path and req->query_raw from the request target. Origin form ("/a/b?q") is
 * split by hand: evhttp's URI parser would read "//x" as an authority. -1 when the
 * target has no usable path.
 */
static int target_split(struct nf_http_req *req, struct evhttp_request *ev)
{
    const char *raw = evhttp_request_get_uri(ev);
    const struct evhttp_uri *uri;
    const char *path, *query;

    if (raw != NULL && raw[0] == '/') {
        size_t plen = strcspn(raw, "?#");
        req->path = nf_xstrndup(raw, plen);
        if (raw[plen] == '?')
            req->query_raw = nf_xstrndup(raw + plen + 1, strcspn(raw + plen + 1, "#"));
        return 0;
    }
    /* absolute form, "http://host/path?q" */
    uri = evhttp_request_get_evhttp_uri(ev);
    path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
    query = uri != NULL ? evhttp_uri_get_query(uri) : NULL;
    if (uri == NULL || evhttp_uri_get_host(uri) == NULL) {
        req->path = nf_xstrdup(raw != NULL ? raw : "");
        return -1;
    }
    req->path = nf_xstrdup(path != NULL && path[0] == '/' ? path : "/");
    if (query != NULL)
        req->query_raw = nf_xstrdup(query);
    return 0;
}

static size_t header_bytes(struct evhttp_request *ev)
{
    const struct evkeyvalq *in = evhttp_request_get_input_headers(ev);
    const char *uri = evhttp_request_get_uri(ev);
    size_t n = uri != NULL ? strlen(uri) : 0;

    for (const struct evkeyval *h = in->tqh_first; h != NULL; h = h->next.tqe_next)
        n += strlen(h->key) + 2 + strlen(h->value) + 2;
    return n;
}

/* The most specific route of method for the decoded segments; NULL when none. */
static const struct route *best_route(const struct nf_http_server *srv, enum evhttp_cmd_type cmd,
                                      char **segs, size_t nsegs)
{
    const struct route *best = NULL;

    for (size_t i = 0; i < srv->nroutes; i++) {
        const struct route *rt = srv->routes[i];
        if (rt->method == cmd && route_matches(rt, segs, nsegs) &&
            (best == NULL || route_more_specific(rt, best)))
            best = rt;
    }
    return best;
}

const struct route *nf_http_route_stream_of(const struct nf_http_server *srv, const char *method,
                                            const char *target, size_t target_len)
{
    const struct route *best = NULL;
    enum evhttp_cmd_type cmd = 0;
    char **segs = NULL, *path;
    size_t nsegs = 0, plen;

    if (!srv->has_stream_routes || target_len == 0 || target[0] != '/')
        return NULL; /* only origin-form targets ("/a/b?q") */
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (strcmp(methods[i].name, method) == 0)
            cmd = methods[i].type;
    if (cmd == 0)
        return NULL;
    for (plen = 0; plen < target_len && target[plen] != '?' && target[plen] != '#'; plen++)
        ;
    path = nf_xstrndup(target, plen);
    if (split_path(path, &segs, &nsegs) == 0) {
        best = best_route(srv, cmd, segs, nsegs);
        segs_free(segs, nsegs);
    }
    free(path);
    return best != NULL && best->stream ? best : NULL;
}

/* evhttp's callback for every request (arg: the server); the handler owns req from here. */
/* Every body a route reads whole is JSON: one with another declared media type (text/plain,
 * a form) is refused before the route sees it, as is any type on a body that is not
 * there. No Content-Type is taken as JSON (the parser then says whether it is). Streamed
 * bodies (multipart uploads) reach their route empty here and check their own type. */
static bool json_or_no_body(struct evhttp_request *ev)
{
    if (evbuffer_get_length(evhttp_request_get_input_buffer(ev)) == 0)
        return true;
    const char *ct = evhttp_find_header(evhttp_request_get_input_headers(ev), "Content-Type");
    if (ct == NULL)
        return true;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = strcspn(ct, ";");
    while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
        n--;
    if (n == 16 && strncasecmp(ct, "application/json", 16) == 0)
        return true;
    /* application/<something>+json (RFC 6839), e.g. application/merge-patch+json */
    return n > 17 && strncasecmp(ct, "application/", 12) == 0 &&
           strncasecmp(ct + n - 5, "+json", 5) == 0;
}

void nf_http_on_request(struct evhttp_request *ev, void *arg)
{
    struct nf_http_server *srv = arg;
    struct nf_http_req *req = nf_http_req_new(srv, ev);
    enum evhttp_cmd_type cmd = evhttp_request_get_command(ev);
    struct route *best = NULL;
    bool path_known = false;
    char allow[128] = "";
    char **segs = NULL;
    size_t nsegs = 0;
    int target_rc = target_split(req, ev);
    struct evkeyvalq *in = evhttp_request_get_input_headers(ev);
    const char *marker = evhttp_find_header(in, NF_HTTP_BODY_MARKER);

    /* A head the connection filter rewrote: this request takes its streamed body before
     * anything can answer it. Any other marker is a client's and goes. */
    if (marker != NULL) {
        if (req->conn != NULL)
            nf_http_body_claim(req, req->conn, marker);
        evhttp_remove_header(in, NF_HTTP_BODY_MARKER);
    }
    if (header_bytes(ev) > srv->limits.max_headers) {
        nf_http_reply_error(req, 431, "headers_too_large", NULL, "request headers exceed %zu bytes",
                            srv->limits.max_headers);
        return;
    }
    if (target_rc != 0) {
        nf_http_reply_error(req, 400, "bad_request", NULL, "invalid request target");
        return;
    }
    if (parse_query(req, req->query_raw) != 0 || split_path(req->path, &segs, &nsegs) != 0) {
        nf_http_reply_error(req, 400, "bad_request", NULL, "request target contains a NUL byte");
        return;
    }

    for (size_t i = 0; i < srv->nroutes; i++) {
        struct route *rt = srv->routes[i];
        if (!route_matches(rt, segs, nsegs))
            continue;
        if (!path_known || strstr(allow, rt->method_name) == NULL) {
            size_t used = strlen(allow);
            snprintf(allow + used, sizeof(allow) - used, "%s%s", used > 0 ? ", " : "",
                     rt->method_name);
        }
        path_known = true;
        if (rt->method == cmd && (best == NULL || route_more_specific(rt, best)))
            best = rt;
    }

    if (best == NULL) {
        segs_free(segs, nsegs);
        if (path_known) {
            nf_http_set_header(req, "Allow", allow);
            nf_http_reply_error(req, 405, "method_not_allowed", NULL,
                                "method %s is not allowed here", req->method);
        } else {
            nf_http_reply_error(req, 404, "not_found", NULL, "no such resource");
        }
        return;
    }

    if (srv->limits.json_only && !json_or_no_body(ev)) {
        segs_free(segs, nsegs);
        nf_http_reply_error(req, 415, "unsupported_media_type", NULL,
                            "the body must be JSON: send it with Content-Type: application/json");
        return;
    }
    req->route = nf_xstrdup(best->pattern);
    req->duration = best->duration;
    for (size_t i = 0; i < nsegs; i++) {
        if (!best->is_param[i])
            continue;
        req->params = nf_xrealloc(req->params, (req->nparams + 1) * sizeof(*req->params));
        req->params[req->nparams].name = nf_xstrdup(best->segs[i]);
        req->params[req->nparams].value = segs[i];
        segs[i] = NULL;
        req->nparams++;
    }
    segs_free(segs, nsegs);
    best->fn(req, best->arg); /* req may be freed from here on */
}
