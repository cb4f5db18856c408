/*
 * multipart/form-data (RFC 7578, RFC 2046 §5.1), read incrementally and pure: bytes come
 * in pieces of any size, the parts go out through callbacks, nothing is kept but one
 * part's headers (GW_MP_HEAD_MAX) and a partial boundary.
 *
 *   [preamble] CRLF? "--" boundary [blanks] CRLF
 *     part headers (Content-Disposition: form-data; name="x"[; filename="y"],
 *     Content-Type) CRLF CRLF          --> part(name, filename, content type)
 *     body                             --> data(...) ... (a boundary may be split
 *                                          across any two pieces)
 *   CRLF "--" boundary [blanks] CRLF   --> part_end, next part
 *   CRLF "--" boundary "--"            --> part_end, done; the epilogue is ignored
 *
 * The delimiter is CRLF "--" boundary, and a boundary has no CR (checked), so a partial
 * match that fails never hides the start of another: the bytes held back are data.
 * Hostile input ends in GW_MP_ERROR with a reason: headers too long or folded, a CR or
 * NUL inside a header, a part without a form-data name, a broken boundary line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gw.h"

enum {
    S_PREAMBLE, /* before the first boundary: dropped */
    S_AFTER,    /* right after a boundary: "--", blanks or the line end */
    S_PAD,      /* blanks after a boundary */
    S_DASH,     /* one '-' of "--" seen */
    S_LF,       /* CR of the boundary line seen */
    S_HEAD,     /* a part's headers */
    S_BODY,     /* a part's body */
    S_DONE,     /* after the closing boundary */
};

/* RFC 2046 bchars, plus "not ending with a space". */
static bool boundary_ok(const char *b, size_t n)
{
    if (n < 1 || n > GW_MP_BOUNDARY_MAX || b[n - 1] == ' ')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = b[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr("'()+_,-./:=? ", c) != NULL))
            return false;
    }
    return true;
}

int gw_mp_boundary(const char *content_type, char out[GW_MP_BOUNDARY_MAX + 1])
{
    const char *p = content_type, *v;
    size_t n;

    if (p == NULL)
        return -1;
    while (*p == ' ' || *p == '\t')
        p++;
    if (strncasecmp(p, "multipart/form-data", 19) != 0)
        return -1;
    p += 19;
    while (*p != '\0') {
        while (*p == ' ' || *p == '\t' || *p == ';')
            p++;
        if (strncasecmp(p, "boundary=", 9) != 0) {
            p += strcspn(p, ";"); /* another parameter */
            continue;
        }
        v = p + 9;
        if (*v == '"') {
            v++;
            n = strcspn(v, "\"");
            if (v[n] != '"')
                return -2;
        } else {
            n = strcspn(v, "; \t");
        }
        if (!boundary_ok(v, n))
            return -2;
        memcpy(out, v, n);
        out[n] = '\0';
        return 0;
    }
    return -2;
}

void gw_mp_init(struct gw_mp *mp, const char *boundary)
{
    memset(mp, 0, sizeof(*mp));
    mp->dlen = (size_t)snprintf(mp->delim, sizeof(mp->delim), "\r\n--%s", boundary);
    /* as if a line end came first: the body may start with the boundary itself */
    memcpy(mp->carry, "\r\n", 2);
    mp->ncarry = 2;
    mp->state = S_PREAMBLE;
}

bool gw_mp_done(const struct gw_mp *mp)
{
    return mp->state == S_DONE;
}

static int fail(struct gw_mp *mp, const char *why)
{
    mp->error = why;
    return GW_MP_ERROR;
}

/* ---- part headers ------------------------------------------------------------------- */

static const char *skip_blanks(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    return p;
}

/* A quoted-string or token value at *pp into out (at most cap - 1 bytes); -1 when broken
 * or too long. A backslash escapes only '"' and '\' (a Windows path keeps its others). */
static int param_value(const char **pp, const char *end, char *out, size_t cap)
{
    const char *p = *pp;
    size_t n = 0;

    if (p < end && *p == '"') {
        for (p++;; p++) {
            if (p >= end)
                return -1; /* unterminated */
            if (*p == '"')
                break;
            if (*p == '\\' && p + 1 < end && (p[1] == '"' || p[1] == '\\'))
                p++;
            if (n + 1 >= cap)
                return -1;
            out[n++] = *p;
        }
        p++;
    } else {
        for (; p < end && *p != ';' && *p != ' ' && *p != '\t'; p++) {
            if (n + 1 >= cap)
                return -1;
            out[n++] = *p;
        }
    }
    out[n] = '\0';
    *pp = p;
    return 0;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* filename*=UTF-8''percent%20encoded (RFC 5987) into out; -1 when not UTF-8 or broken. */
static int ext_value(const char *v, char *out, size_t cap)
{
    const char *q;
    size_t n = 0;

    if (strncasecmp(v, "UTF-8'", 6) != 0 || (q = strchr(v + 6, '\'')) == NULL)
        return -1;
    for (q++; *q != '\0'; q++) {
        int c = (unsigned char)*q;
        if (c == '%') {
            int hi = hexval(q[1]), lo = hi < 0 ? -1 : hexval(q[2]);
            if (hi < 0 || lo < 0)
                return -1;
            c = hi * 16 + lo;
            q += 2;
        }
        if (c == 0 || n + 1 >= cap)
            return -1;
        out[n++] = (char)c;
    }
    out[n] = '\0';
    return 0;
}

/* Content-Disposition: form-data; name="..."; filename="..."; into part. */
static int disposition(struct gw_mp *mp, const char *p, const char *end)
{
    struct gw_mp_part *part = &mp->part;
    char pname[32], ext[GW_MP_FILENAME_MAX + 1], value[GW_MP_FILENAME_MAX * 3 + 1];
    bool have_name = false, have_ext = false;

    p = skip_blanks(p, end);
    if ((size_t)(end - p) < 9 || strncasecmp(p, "form-data", 9) != 0)
        return fail(mp, "a part's Content-Disposition is not form-data");
    p += 9;
    for (;;) {
        size_t n = 0;

        p = skip_blanks(p, end);
        if (p >= end)
            break;
        if (*p != ';')
            return fail(mp, "malformed Content-Disposition");
        p = skip_blanks(p + 1, end);
        if (p >= end)
            break;
        while (p < end && *p != '=' && *p != ' ' && *p != '\t' && *p != ';') {
            if (n + 1 >= sizeof(pname))
                return fail(mp, "malformed Content-Disposition");
            pname[n++] = *p++;
        }
        pname[n] = '\0';
        p = skip_blanks(p, end);
        if (n == 0 || p >= end || *p != '=')
            return fail(mp, "malformed Content-Disposition");
        p = skip_blanks(p + 1, end);
        if (param_value(&p, end, value, sizeof(value)) != 0)
            return fail(mp, "malformed or too long Content-Disposition parameter");
        if (strcasecmp(pname, "name") == 0) {
            if (have_name || strlen(value) > GW_MP_NAME_MAX)
                return fail(mp, "a part's name is repeated or too long");
            memcpy(part->name, value, strlen(value) + 1);
            have_name = true;
        } else if (strcasecmp(pname, "filename") == 0) {
            if (part->has_filename || strlen(value) > GW_MP_FILENAME_MAX)
                return fail(mp, "a part's filename is repeated or too long");
            memcpy(part->filename, value, strlen(value) + 1);
            part->has_filename = true;
        } else if (strcasecmp(pname, "filename*") == 0) {
            if (have_ext || ext_value(value, ext, sizeof(ext)) != 0)
                return fail(mp, "a part's filename* is repeated or malformed");
            have_ext = true;
        }
    }
    if (!have_name)
        return fail(mp, "a part without a name");
    if (have_ext) { /* the UTF-8 form wins */
        memcpy(part->filename, ext, sizeof(part->filename));
        part->has_filename = true;
    }
    return 0;
}

/* The header block mp->head[0..nhead) (its final empty line included) into mp->part. */
static int parse_head(struct gw_mp *mp)
{
    const char *p = mp->head, *end = mp->head + mp->nhead;
    bool disp = false;

    memset(&mp->part, 0, sizeof(mp->part));
    if (memchr(p, '\0', mp->nhead) != NULL)
        return fail(mp, "a NUL byte in a part's headers");
    while (p < end) {
        const char *lf = memchr(p, '\n', (size_t)(end - p)), *le, *colon;

        le = lf != NULL ? lf : end;
        if (le > p && le[-1] == '\r')
            le--;
        if (le == p)
            break; /* the empty line */
        if (*p == ' ' || *p == '\t')
            return fail(mp, "a folded part header");
        if (memchr(p, '\r', (size_t)(le - p)) != NULL)
            return fail(mp, "a CR inside a part header");
        colon = memchr(p, ':', (size_t)(le - p));
        if (colon == NULL)
            return fail(mp, "a part header without a colon");
        if (colon - p == 19 && strncasecmp(p, "Content-Disposition", 19) == 0) {
            if (disp)
                return fail(mp, "a repeated Content-Disposition");
            disp = true;
            if (disposition(mp, colon + 1, le) != 0)
                return GW_MP_ERROR;
        } else if (colon - p == 12 && strncasecmp(p, "Content-Type", 12) == 0) {
            const char *v = skip_blanks(colon + 1, le);
            size_t n = (size_t)(le - v);

            if (n >= sizeof(mp->part.content_type))
                return fail(mp, "a part's Content-Type is too long");
            memcpy(mp->part.content_type, v, n);
            mp->part.content_type[n] = '\0';
        }
        p = lf != NULL ? lf + 1 : end;
    }
    if (!disp)
        return fail(mp, "a part without Content-Disposition");
    return 0;
}

/* ---- feeding ------------------------------------------------------------------------ */

/* A run of body bytes: to the callback in a part, dropped in the preamble. */
static int emit(struct gw_mp *mp, const char *buf, size_t n, const struct gw_mp_cbs *cbs, void *arg)
{
    if (n == 0 || mp->state != S_BODY)
        return 0;
    return cbs->data(buf, n, arg);
}

/* A whole delimiter was read. */
static int delimiter(struct gw_mp *mp, const struct gw_mp_cbs *cbs, void *arg)
{
    bool in_part = mp->state == S_BODY;

    mp->state = S_AFTER;
    return in_part ? cbs->part_end(arg) : 0;
}

/* Scans buf[*i..len) of a preamble or body for the delimiter. */
static int scan(struct gw_mp *mp, const char *buf, size_t len, size_t *i,
                const struct gw_mp_cbs *cbs, void *arg)
{
    size_t run = *i;
    int rc;

    if (mp->ncarry > 0) { /* a delimiter begun in an earlier piece */
        size_t need = mp->dlen - mp->ncarry, take = len - *i < need ? len - *i : need;

        if (memcmp(buf + *i, mp->delim + mp->ncarry, take) == 0) {
            *i += take;
            if (take < need) {
                memcpy(mp->carry + mp->ncarry, buf + *i - take, take);
                mp->ncarry += take;
                return 0;
            }
            mp->ncarry = 0;
            return delimiter(mp, cbs, arg);
        }
        /* not one: what was held back is data (no other delimiter can start inside it) */
        rc = emit(mp, mp->carry, mp->ncarry, cbs, arg);
        mp->ncarry = 0;
        if (rc != 0)
            return rc;
    }
    while (*i < len) {
        const char *cr = memchr(buf + *i, '\r', len - *i);
        size_t at, k;

        if (cr == NULL) {
            *i = len;
            break;
        }
        at = (size_t)(cr - buf);
        k = len - at < mp->dlen ? len - at : mp->dlen;
        if (memcmp(cr, mp->delim, k) != 0) {
            *i = at + 1;
            continue;
        }
        if ((rc = emit(mp, buf + run, at - run, cbs, arg)) != 0)
            return rc;
        if (k < mp->dlen) { /* the piece ends inside a possible delimiter */
            memcpy(mp->carry, cr, k);
            mp->ncarry = k;
            *i = len;
            return 0;
        }
        *i = at + mp->dlen;
        return delimiter(mp, cbs, arg);
    }
    return emit(mp, buf + run, *i - run, cbs, arg);
}

/* One byte of a boundary line or of the headers. */
static int step(struct gw_mp *mp, char c, const struct gw_mp_cbs *cbs, void *arg)
{
    switch (mp->state) {
    case S_AFTER:
    case S_PAD:
        if (c == '-' && mp->state == S_AFTER)
            mp->state = S_DASH;
        else if (c == ' ' || c == '\t')
            mp->state = S_PAD;
        else if (c == '\r')
            mp->state = S_LF;
        else if (c == '\n')
            mp->state = S_HEAD;
        else
            return fail(mp, "garbage after a boundary");
        mp->nhead = 0;
        return 0;
    case S_DASH:
        if (c != '-')
            return fail(mp, "garbage after a boundary");
        mp->state = S_DONE;
        return 0;
    case S_LF:
        if (c != '\n')
            return fail(mp, "a boundary line without LF");
        mp->state = S_HEAD;
        return 0;
    case S_HEAD:
        if (mp->nhead >= sizeof(mp->head))
            return fail(mp, "a part's headers are too long");
        mp->head[mp->nhead++] = c;
        if (c == '\n' && (mp->nhead == 1 || (mp->nhead == 2 && mp->head[0] == '\r') ||
                          (mp->nhead >= 2 && mp->head[mp->nhead - 2] == '\n') ||
                          (mp->nhead >= 3 && mp->head[mp->nhead - 2] == '\r' &&
                           mp->head[mp->nhead - 3] == '\n'))) {
            if (parse_head(mp) != 0)
                return GW_MP_ERROR;
            mp->state = S_BODY;
            return cbs->part(&mp->part, arg);
        }
        return 0;
    default:
        return 0;
    }
}

int gw_mp_feed(struct gw_mp *mp, const char *buf, size_t len, const struct gw_mp_cbs *cbs,
               void *arg)
{
    size_t i = 0;
    int rc = 0;

    if (mp->error != NULL)
        return GW_MP_ERROR;
    while (i < len && rc == 0) {
        switch (mp->state) {
        case S_PREAMBLE:
        case S_BODY:
            rc = scan(mp, buf, len, &i, cbs, arg);
            break;
        case S_DONE:
            return 0; /* the epilogue */
        default:
            rc = step(mp, buf[i++], cbs, arg);
            break;
        }
    }
    return rc;
}
