/*
 * nf_http_frame: HTTP/1.1 request framing as the connection filter (nf_http_conn.c) needs
 * it, pure: it reads bytes and says what they are; it never reads a socket.
 *
 *   head bytes --nf_http_head_parse--> method, target, framing (none | Content-Length |
 *       chunked), Expect: 100-continue, whether the client sent our marker header
 *   --nf_http_head_rewrite--> the head evhttp sees: for a streamed body the framing
 *       headers replaced by "Content-Length: 0" and "X-Nf-Body-Stream: <token>"
 *   body bytes --nf_http_frame_next / _consume--> the body's data spans, de-chunked
 *
 * The filter must never disagree with evhttp about where a request ends, or a body byte
 * would be read as a request (request smuggling). So the head parser is strict and gives
 * up (-1, the connection then passes bytes through untouched for good) on anything
 * evhttp might read differently: folded headers, odd spacing, several Content-Length or
 * Transfer-Encoding headers or both at once, a transfer coding other than "chunked", an
 * Expect other than 100-continue, a method evhttp does not know. It follows evhttp 2.1.12
 * where that is the question: HEAD and TRACE have no body whatever they say; a request
 * without Content-Length and Transfer-Encoding has none.
 */
#include "nf_http_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "nf_mem.h"

#define CHUNK_LINE_MAX 1024 /* a chunk-size line, extensions included */

/* Methods evhttp knows, and whether it reads a body for them. */
static const struct {
    const char *name;
    bool body;
} methods[] = {
    {"GET", true},     {"POST", true},    {"PUT", true},   {"DELETE", true}, {"PATCH", true},
    {"OPTIONS", true}, {"CONNECT", true}, {"HEAD", false}, {"TRACE", false},
};

/* ---- lines -------------------------------------------------------------------------- */

/*
 * The line starting at p[*off] (n bytes in all): its start and length without the line
 * end ("\n" or "\r\n", as evhttp's EVBUFFER_EOL_CRLF reads them), *off moved past it.
 * false when no complete line is there.
 */
static bool next_line(const char *p, size_t n, size_t *off, const char **line, size_t *len)
{
    const char *s = p + *off;
    const char *lf = memchr(s, '\n', n - *off);
    size_t l;

    if (lf == NULL)
        return false;
    l = (size_t)(lf - s);
    *off += l + 1;
    if (l > 0 && s[l - 1] == '\r')
        l--;
    *line = s;
    *len = l;
    return true;
}

static bool is_tchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Splits a header line "Name: value" (name a token, value trimmed of blanks); false when
 * it is not one. */
static bool split_header(const char *line, size_t len, size_t *name_len, const char **value,
                         size_t *value_len)
{
    const char *colon = memchr(line, ':', len);
    const char *v, *end = line + len;

    if (colon == NULL || colon == line)
        return false;
    for (const char *c = line; c < colon; c++)
        if (!is_tchar(*c))
            return false;
    for (v = colon + 1; v < end && (*v == ' ' || *v == '\t'); v++)
        ;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    for (const char *c = v; c < end; c++)
        if ((unsigned char)*c < 0x20 && *c != '\t')
            return false; /* a bare CR or another control byte inside the value */
    *name_len = (size_t)(colon - line);
    *value = v;
    *value_len = (size_t)(end - v);
    return true;
}

static bool name_is(const char *line, size_t name_len, const char *name)
{
    return name_len == strlen(name) && strncasecmp(line, name, name_len) == 0;
}

static bool value_is(const char *v, size_t len, const char *want)
{
    return len == strlen(want) && strncasecmp(v, want, len) == 0;
}

/* ---- heads -------------------------------------------------------------------------- */

/* Parses the request line into h; false when it is not "METHOD SP target SP HTTP/1.x". */
static bool parse_request_line(const char *line, size_t len, struct nf_http_head *h)
{
    const char *sp1 = memchr(line, ' ', len), *sp2, *ver;
    size_t mlen, vlen;

    if (sp1 == NULL)
        return false;
    mlen = (size_t)(sp1 - line);
    sp2 = memchr(sp1 + 1, ' ', len - mlen - 1);
    if (sp2 == NULL || sp2 == sp1 + 1 || mlen == 0 || mlen >= sizeof(h->method))
        return false;
    ver = sp2 + 1;
    vlen = len - (size_t)(ver - line);
    if (vlen != 8 || (memcmp(ver, "HTTP/1.1", 8) != 0 && memcmp(ver, "HTTP/1.0", 8) != 0))
        return false;
    memcpy(h->method, line, mlen);
    h->method[mlen] = '\0';
    h->target = sp1 + 1;
    h->target_len = (size_t)(sp2 - sp1 - 1);
    for (size_t i = 0; i < h->target_len; i++)
        if ((unsigned char)h->target[i] <= 0x20 || (unsigned char)h->target[i] == 0x7f)
            return false;
    return true;
}

/* Content-Length: 1..19 digits; false otherwise. */
static bool parse_length(const char *v, size_t len, uint64_t *out)
{
    uint64_t x = 0;

    if (len == 0 || len > 19)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return false;
        x = x * 10 + (uint64_t)(v[i] - '0');
    }
    *out = x;
    return true;
}

int nf_http_head_parse(const char *p, size_t n, size_t max, struct nf_http_head *h)
{
    size_t off = 0, len, nlen, vlen, ncl = 0, nte = 0;
    const char *line, *v;
    bool body = false, known = false;

    memset(h, 0, sizeof(*h));
    if (!next_line(p, n, &off, &line, &len))
        return n > max ? -1 : 0;
    if (!parse_request_line(line, len, h))
        return -1;
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        if (strcmp(methods[i].name, h->method) == 0) {
            known = true;
            body = methods[i].body;
        }
    }
    if (!known)
        return -1;
    for (;;) {
        if (!next_line(p, n, &off, &line, &len))
            return n > max ? -1 : 0;
        if (off > max)
            return -1;
        if (len == 0)
            break; /* the empty line: end of the head */
        if (!split_header(line, len, &nlen, &v, &vlen))
            return -1; /* also a folded line: it starts with a blank */
        if (name_is(line, nlen, "Content-Length")) {
            if (++ncl > 1 || !parse_length(v, vlen, &h->length))
                return -1;
        } else if (name_is(line, nlen, "Transfer-Encoding")) {
            if (++nte > 1 || !value_is(v, vlen, "chunked"))
                return -1;
        } else if (name_is(line, nlen, "Expect")) {
            if (!value_is(v, vlen, "100-continue"))
                return -1;
            h->expect_continue = true;
        } else if (name_is(line, nlen, NF_HTTP_BODY_MARKER)) {
            h->has_marker = true;
        }
    }
    if (ncl > 0 && nte > 0)
        return -1;
    h->len = off;
    h->framing = NF_HTTP_FRAME_NONE;
    if (body && nte > 0)
        h->framing = NF_HTTP_FRAME_CHUNKED;
    else if (body && ncl > 0 && h->length > 0)
        h->framing = NF_HTTP_FRAME_LENGTH;
    return 1;
}

char *nf_http_head_rewrite(const char *p, const struct nf_http_head *h, const char *token,
                           size_t *out_len)
{
    size_t off = 0, len, nlen, vlen, o = 0;
    /* each kept line gets "\r\n" (one byte more at most), then the two added headers */
    size_t cap = 2 * h->len + 64 + sizeof(NF_HTTP_BODY_MARKER) + (token ? strlen(token) : 0);
    char *out = nf_xmalloc(cap);
    const char *line, *v;
    bool first = true;

    while (off < h->len && next_line(p, h->len, &off, &line, &len) && len > 0) {
        if (!first && split_header(line, len, &nlen, &v, &vlen)) {
            if (name_is(line, nlen, NF_HTTP_BODY_MARKER))
                continue;
            if (token != NULL &&
                (name_is(line, nlen, "Content-Length") ||
                 name_is(line, nlen, "Transfer-Encoding") || name_is(line, nlen, "Expect")))
                continue;
        }
        first = false;
        memcpy(out + o, line, len);
        o += len;
        out[o++] = '\r';
        out[o++] = '\n';
    }
    if (token != NULL)
        o += (size_t)snprintf(out + o, cap - o, "Content-Length: 0\r\n%s: %s\r\n",
                              NF_HTTP_BODY_MARKER, token);
    out[o++] = '\r';
    out[o++] = '\n';
    *out_len = o;
    return out;
}

/* ---- bodies ------------------------------------------------------------------------- */

enum { CH_SIZE, CH_DATA, CH_DATA_END, CH_TRAILER, CH_DONE };

void nf_http_frame_init(struct nf_http_frame *f, enum nf_http_framing framing, uint64_t length,
                        size_t max_trailer)
{
    memset(f, 0, sizeof(*f));
    f->framing = framing;
    f->left = framing == NF_HTTP_FRAME_LENGTH ? length : 0;
    f->cstate = CH_SIZE;
    f->max_trailer = max_trailer;
}

/* The first contiguous span of in, at most max bytes. */
static void first_span(struct evbuffer *in, uint64_t max, const char **p, size_t *n)
{
    struct evbuffer_iovec v;

    evbuffer_peek(in, -1, NULL, &v, 1);
    *p = v.iov_base;
    *n = v.iov_len < max ? v.iov_len : (size_t)max;
}

/* "1a2B" (hex, optional ";ext" or blanks after it) into *out; false when it is not one. */
static bool parse_chunk_size(const char *s, size_t len, uint64_t *out)
{
    uint64_t x = 0;
    size_t i;

    for (i = 0; i < len; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            break;
        if (i >= 15)
            return false; /* more than 2^60: nobody sends that */
        x = x * 16 + (uint64_t)d;
    }
    if (i == 0 || (i < len && s[i] != ';' && s[i] != ' ' && s[i] != '\t'))
        return false;
    *out = x;
    return true;
}

int nf_http_frame_next(struct nf_http_frame *f, struct evbuffer *in, const char **p, size_t *n)
{
    size_t avail, len;
    char *line;

    for (;;) {
        avail = evbuffer_get_length(in);
        if (f->framing == NF_HTTP_FRAME_NONE)
            return NF_HTTP_FRAME_DONE;
        if (f->framing == NF_HTTP_FRAME_LENGTH) {
            if (f->left == 0)
                return NF_HTTP_FRAME_DONE;
            if (avail == 0)
                return NF_HTTP_FRAME_NEED;
            first_span(in, f->left, p, n);
            return NF_HTTP_FRAME_DATA;
        }
        switch (f->cstate) {
        case CH_SIZE:
        case CH_TRAILER:
            line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF);
            if (line == NULL) {
                if (avail > CHUNK_LINE_MAX ||
                    (f->cstate == CH_TRAILER && f->trailer + avail > f->max_trailer))
                    return NF_HTTP_FRAME_BAD;
                return NF_HTTP_FRAME_NEED;
            }
            if (f->cstate == CH_TRAILER) {
                f->trailer += len + 2;
                free(line);
                if (len == 0)
                    f->cstate = CH_DONE;
                else if (f->trailer > f->max_trailer)
                    return NF_HTTP_FRAME_BAD;
                continue;
            }
            if (len > CHUNK_LINE_MAX || !parse_chunk_size(line, len, &f->left)) {
                free(line);
                return NF_HTTP_FRAME_BAD;
            }
            free(line);
            f->cstate = f->left == 0 ? CH_TRAILER : CH_DATA;
            continue;
        case CH_DATA:
            if (f->left == 0) {
                f->cstate = CH_DATA_END;
                continue;
            }
            if (avail == 0)
                return NF_HTTP_FRAME_NEED;
            first_span(in, f->left, p, n);
            return NF_HTTP_FRAME_DATA;
        case CH_DATA_END: {
            unsigned char crlf[2];
            size_t got = avail < 2 ? avail : 2, eol;

            if (got == 0)
                return NF_HTTP_FRAME_NEED;
            evbuffer_copyout(in, crlf, got);
            if (crlf[0] == '\n')
                eol = 1;
            else if (got == 2 && crlf[0] == '\r' && crlf[1] == '\n')
                eol = 2;
            else
                eol = 0;
            if (eol == 0)
                return crlf[0] == '\r' && got < 2 ? NF_HTTP_FRAME_NEED : NF_HTTP_FRAME_BAD;
            evbuffer_drain(in, eol);
            f->cstate = CH_SIZE;
            continue;
        }
        default:
            return NF_HTTP_FRAME_DONE;
        }
    }
}

void nf_http_frame_consume(struct nf_http_frame *f, struct evbuffer *in, size_t n)
{
    evbuffer_drain(in, n);
    f->left -= n < f->left ? n : f->left;
}
