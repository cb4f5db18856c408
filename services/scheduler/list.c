/*
 * The query strings of the list routes and their opaque cursors (pure: unit tested).
 *
 *   "status=queued,running&job_type=generate&metadata%5Bteam%5D=ml&limit=50&cursor=..."
 *     --split on '&', '='--> percent-decoded key and value (keys too: clients encode
 *       "metadata[team]" as "metadata%5Bteam%5D")
 *     --per key--> known for this list? given once? value valid?   (else err naming it)
 *     --> struct sched_list_query
 *
 * A cursor is base64url("<kind>1:<position>") without padding: kind 'j' (jobs, position
 * = the last job id of the page), 'e' (events, position = job_events.seq), 'a'
 * (artifacts, position = the last artifact id). Clients treat it as opaque; we accept
 * only what we produce, so a cursor of another list or a hand-made one is a 400.
 */
#include "sched.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "nf_crypto.h"
#include "nf_id.h"
#include "nf_mem.h"

#define META_KEY_MAX 64
#define META_VAL_MAX 512
#define SEQ_MAX_DIGITS 18

/* ---- cursors ------------------------------------------------------------------------ */

static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* Unpadded base64url into out (NUL-terminated); -1 on a bad character, length or size. */
static int b64url_decode(const char *in, char *out, size_t outlen)
{
    size_t n = strlen(in), i, o = 0;
    unsigned acc = 0;
    int bits = 0, v;

    if (n % 4 == 1)
        return -1;
    for (i = 0; i < n; i++) {
        v = b64url_value((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o + 1 >= outlen)
                return -1;
            out[o++] = (char)((acc >> bits) & 0xff);
        }
    }
    /* the leftover bits of the last character must be zero (one encoding per text) */
    if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
        return -1;
    out[o] = '\0';
    return memchr(out, '\0', o) ? -1 : 0;
}

static bool seq_valid(const char *s)
{
    size_t n = strlen(s), i;

    if (n == 0 || n > SEQ_MAX_DIGITS || (n > 1 && s[0] == '0'))
        return false;
    for (i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return false;
    return true;
}

static bool position_valid(char kind, const char *pos)
{
    switch (kind) {
    case SCHED_CURSOR_JOBS:
        return nf_id_valid("job", pos);
    case SCHED_CURSOR_EVENTS:
        return seq_valid(pos);
    case SCHED_CURSOR_ARTIFACTS:
        return nf_id_valid("art", pos);
    default:
        return false;
    }
}

int sched_cursor_encode(char kind, const char *pos, char *out, size_t outlen)
{
    char plain[SCHED_CURSOR_MAX];
    int n;

    if (!pos || !position_valid(kind, pos))
        return -1;
    n = snprintf(plain, sizeof(plain), "%c1:%s", kind, pos);
    if (n < 0 || (size_t)n >= sizeof(plain))
        return -1;
    /* nf_crypto_b64url: unpadded base64url, 0 when out is too small */
    return nf_crypto_b64url(plain, (size_t)n, out, outlen) > 0 ? 0 : -1;
}

int sched_cursor_decode(char kind, const char *cursor, char *pos, size_t poslen)
{
    char plain[SCHED_CURSOR_MAX];

    if (!cursor || !*cursor || strlen(cursor) >= SCHED_CURSOR_MAX)
        return -1;
    if (b64url_decode(cursor, plain, sizeof(plain)) < 0)
        return -1;
    if (plain[0] != kind || plain[1] != '1' || plain[2] != ':' || !position_valid(kind, plain + 3))
        return -1;
    if (strlen(plain + 3) >= poslen)
        return -1;
    snprintf(pos, poslen, "%s", plain + 3);
    return 0;
}

/* ---- query strings -------------------------------------------------------------------- */

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int sched_query_decode(const char *s, size_t len, char **out)
{
    char *buf = nf_xmalloc(len + 1);
    size_t i, o = 0;
    int hi, lo;

    for (i = 0; i < len; i++) {
        if (s[i] == '+') {
            buf[o++] = ' ';
        } else if (s[i] == '%') {
            if (i + 2 >= len)
                goto fail;
            hi = hexval((unsigned char)s[i + 1]);
            lo = hexval((unsigned char)s[i + 2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                goto fail;
            buf[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            buf[o++] = s[i];
        }
    }
    buf[o] = '\0';
    *out = buf;
    return 0;
fail:
    free(buf);
    return -1;
}

/* Index of the n-byte name s in names (count of them), -1 if absent. */
static int name_index(const char *s, size_t n, const char *const *names, int count)
{
    int i;

    for (i = 0; i < count; i++)
        if (strlen(names[i]) == n && strncmp(s, names[i], n) == 0)
            return i;
    return -1;
}

/* "a,b" of names into a bit mask (bit = index); -1 on an unknown or empty member. */
static int parse_names(const char *v, const char *const *names, int count, unsigned *mask)
{
    const char *p = v, *comma;
    size_t n;
    int i;

    *mask = 0;
    for (;;) {
        comma = strchr(p, ',');
        n = comma ? (size_t)(comma - p) : strlen(p);
        i = name_index(p, n, names, count);
        if (n == 0 || i < 0)
            return -1;
        *mask |= 1u << i;
        if (!comma)
            return 0;
        p = comma + 1;
    }
}

static int parse_statuses(const char *v, unsigned *mask)
{
    const char *names[SCHED_NSTATUS];
    int i;

    for (i = 0; i < SCHED_NSTATUS; i++)
        names[i] = sched_status_name((enum sched_status)i);
    return parse_names(v, names, SCHED_NSTATUS, mask);
}

static int parse_types(const char *v, unsigned *mask)
{
    return parse_names(v, nf_job_types, NF_NJOB_TYPES, mask);
}

/* "metadata[team]" -> "team" (pointer into key); NULL when key is not of that form. */
static const char *metadata_key(const char *key)
{
    size_t n = strlen(key);

    if (n < strlen("metadata[]") || strncmp(key, "metadata[", 9) != 0 || key[n - 1] != ']')
        return NULL;
    return key + 9;
}

/* Seen-flags of the scalar keys, so a key given twice is refused. */
enum { SEEN_STATUS = 1, SEEN_TYPE = 2, SEEN_LIMIT = 4, SEEN_CURSOR = 8, SEEN_JOB = 16 };

static int once(unsigned *seen, unsigned bit, const char *key, struct nf_json_err *err)
{
    if (*seen & bit)
        return nf_json_fail(err, key, "query parameter %s is given more than once", key);
    *seen |= bit;
    return 0;
}

/* A comma-separated name filter (status, job_type), given at most once, into *mask;
 * names lists the accepted ones for the error message. */
static int name_filter(unsigned *seen, unsigned bit, const char *key, const char *val,
                       int (*parse)(const char *v, unsigned *mask), unsigned *mask,
                       const char *names, struct nf_json_err *err)
{
    if (once(seen, bit, key, err) < 0)
        return -1;
    if (parse(val, mask) < 0)
        return nf_json_fail(err, key, "%s must be one or more (comma-separated) of %s", key, names);
    return 0;
}

static char cursor_kind(enum sched_list_kind kind)
{
    if (kind == SCHED_LIST_JOBS)
        return SCHED_CURSOR_JOBS;
    return kind == SCHED_LIST_EVENTS || kind == SCHED_LIST_METRICS ? (char)SCHED_CURSOR_EVENTS
                                                                   : (char)SCHED_CURSOR_ARTIFACTS;
}

/* One decoded key=value pair into q. */
static int parse_pair(enum sched_list_kind kind, const char *key, const char *val,
                      struct sched_list_query *q, unsigned *seen, struct nf_json_err *err)
{
    const char *mk;
    char *end;
    long v;

    if (strcmp(key, "limit") == 0) {
        int max = kind == SCHED_LIST_METRICS ? SCHED_METRICS_MAX_LIMIT : SCHED_LIST_MAX_LIMIT;
        if (once(seen, SEEN_LIMIT, key, err) < 0)
            return -1;
        v = isdigit((unsigned char)val[0]) ? strtol(val, &end, 10) : -1;
        if (v < 1 || v > max || *end || strlen(val) > (kind == SCHED_LIST_METRICS ? 4u : 3u))
            return nf_json_fail(err, "limit", "limit must be an integer between 1 and %d", max);
        q->limit = (int)v;
        return 0;
    }
    if (strcmp(key, "cursor") == 0) {
        if (once(seen, SEEN_CURSOR, key, err) < 0)
            return -1;
        if (sched_cursor_decode(cursor_kind(kind), val, q->after, sizeof(q->after)) < 0)
            return nf_json_fail(err, "cursor",
                                "cursor is not valid here: pass next_cursor of a previous page "
                                "of this list");
        return 0;
    }
    if (kind == SCHED_LIST_JOBS && strcmp(key, "status") == 0)
        return name_filter(seen, SEEN_STATUS, key, val, parse_statuses, &q->statuses,
                           "queued, assigned, running, cancel_requested, succeeded, failed, "
                           "cancelled, dead_lettered",
                           err);
    if (kind == SCHED_LIST_JOBS && strcmp(key, "job_type") == 0)
        return name_filter(seen, SEEN_TYPE, key, val, parse_types, &q->types,
                           "generate, audit, distill, train, evaluate, deploy", err);
    if (kind == SCHED_LIST_JOBS && (mk = metadata_key(key))) {
        size_t klen = strlen(mk) - 1; /* without the closing ']' */

        if (klen == 0 || klen > META_KEY_MAX || memchr(mk, '[', klen) || memchr(mk, ']', klen))
            return nf_json_fail(err, key, "metadata filter keys must have 1 to %d characters",
                                META_KEY_MAX);
        if (strlen(val) > META_VAL_MAX)
            return nf_json_fail(err, key, "metadata filter values must have at most %d characters",
                                META_VAL_MAX);
        if (!q->metadata)
            q->metadata = nf_json_obj();
        char *mkey = nf_xstrndup(mk, klen);
        if (cJSON_GetObjectItemCaseSensitive(q->metadata, mkey)) {
            free(mkey);
            return nf_json_fail(err, key, "query parameter %s is given more than once", key);
        }
        if (cJSON_GetArraySize(q->metadata) >= SCHED_LIST_MAX_META) {
            free(mkey);
            return nf_json_fail(err, key, "at most %d metadata filters", SCHED_LIST_MAX_META);
        }
        nf_json_add_str(q->metadata, mkey, val);
        free(mkey);
        return 0;
    }
    if (kind == SCHED_LIST_ARTIFACTS && strcmp(key, "job_id") == 0) {
        if (once(seen, SEEN_JOB, key, err) < 0)
            return -1;
        if (!nf_id_valid("job", val))
            return nf_json_fail(err, "job_id", "job_id must be a job id (job_<ULID>)");
        snprintf(q->job_id, sizeof(q->job_id), "%s", val);
        return 0;
    }
    if (kind == SCHED_LIST_FILES && strcmp(key, "s3_uri") == 0) {
        if (q->s3_uri[0] != '\0')
            return nf_json_fail(err, key, "query parameter %s is given more than once", key);
        if (strncmp(val, "s3://", 5) != 0 || strlen(val) >= sizeof(q->s3_uri))
            return nf_json_fail(err, "s3_uri", "s3_uri must be an s3:// URI");
        snprintf(q->s3_uri, sizeof(q->s3_uri), "%s", val);
        return 0;
    }
    if (kind == SCHED_LIST_METRICS && strcmp(key, "stream") == 0) {
        if (strcmp(val, "true") != 0 && strcmp(val, "false") != 0)
            return nf_json_fail(err, "stream", "stream must be true or false");
        return 0;
    }
    if (kind == SCHED_LIST_FILES && strcmp(key, "purpose") == 0) {
        if (once(seen, SEEN_JOB, key, err) < 0)
            return -1;
        if (strcmp(val, "dataset") != 0 && strcmp(val, "model") != 0 && strcmp(val, "other") != 0)
            return nf_json_fail(err, "purpose", "purpose must be dataset, model or other");
        snprintf(q->purpose, sizeof(q->purpose), "%s", val);
        return 0;
    }
    return nf_json_fail(err, key, "unknown query parameter \"%.64s\"", key);
}

int sched_list_parse(enum sched_list_kind kind, const char *query, struct sched_list_query *out,
                     struct nf_json_err *err)
{
    struct sched_list_query q;
    const char *p = query ? query : "", *amp, *eq;
    char *key = NULL, *val = NULL;
    unsigned seen = 0;
    size_t len;

    memset(&q, 0, sizeof(q));
    q.limit = kind == SCHED_LIST_METRICS ? SCHED_METRICS_DEFAULT_LIMIT : SCHED_LIST_DEFAULT_LIMIT;
    while (*p) {
        amp = strchr(p, '&');
        len = amp ? (size_t)(amp - p) : strlen(p);
        if (len > 0) {
            eq = memchr(p, '=', len);
            if (sched_query_decode(p, eq ? (size_t)(eq - p) : len, &key) < 0 ||
                (eq && sched_query_decode(eq + 1, len - (size_t)(eq + 1 - p), &val) < 0) ||
                (!eq && sched_query_decode("", 0, &val) < 0)) {
                nf_json_fail(err, "query", "the query string has a malformed %%-escape");
                goto fail;
            }
            if (!*key) {
                nf_json_fail(err, "query", "the query string has a parameter without a name");
                goto fail;
            }
            if (parse_pair(kind, key, val, &q, &seen, err) < 0)
                goto fail;
            free(key);
            free(val);
            key = val = NULL;
        }
        p += len;
        if (*p == '&')
            p++;
    }
    *out = q;
    return 0;
fail:
    free(key);
    free(val);
    sched_list_query_clear(&q);
    return -1;
}

void sched_list_query_clear(struct sched_list_query *q)
{
    if (!q)
        return;
    cJSON_Delete(q->metadata);
    q->metadata = NULL;
}

int sched_types_array(unsigned mask, char *out, size_t outlen)
{
    return sched_names_array(mask, nf_job_types, NF_NJOB_TYPES, out, outlen);
}

/* ---- read-your-writes merge -------------------------------------------------------------- */

static bool in_array(const cJSON *arr, const char *job_id)
{
    const cJSON *it;

    cJSON_ArrayForEach(it, arr)
    {
        const char *id = nf_json_str(it, "job_id");

        if (id && strcmp(id, job_id) == 0)
            return true;
    }
    return false;
}

/* The query's filters applied to a job object. */
static bool matches(const struct sched_list_query *q, const cJSON *doc)
{
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(doc, "metadata"), *f;
    const char *type = nf_json_str(doc, "job_type"), *v;
    enum sched_status st;
    int i;

    if (q->statuses &&
        (sched_status_parse(nf_json_str(doc, "status"), &st) < 0 || !(q->statuses & SCHED_BIT(st))))
        return false;
    if (q->types) {
        for (i = 0; i < NF_NJOB_TYPES; i++)
            if (type && strcmp(type, nf_job_types[i]) == 0)
                break;
        if (i == NF_NJOB_TYPES || !(q->types & (1u << i)))
            return false;
    }
    cJSON_ArrayForEach(f, q->metadata)
    {
        v = nf_json_str(meta, f->string);
        if (!v || strcmp(v, f->valuestring) != 0)
            return false;
    }
    return true;
}

/*
 * Inserts doc (owned from now on) into arr, keeping job ids in descending order. Not with
 * cJSON_InsertItemInArray: Debian 12's cJSON 1.7.15 (+deb12u4) refuses every insert past
 * index 0 (its CVE-2023-50471 backport checks the new item's prev link). The items after
 * the position are taken off the end and added back behind doc.
 */
static void insert_sorted(cJSON *arr, cJSON *doc)
{
    const char *id = nf_json_str(doc, "job_id");
    int i = 0, n = cJSON_GetArraySize(arr), j;
    cJSON **after;

    while (i < n && strcmp(nf_json_str(cJSON_GetArrayItem(arr, i), "job_id"), id) > 0)
        i++;
    after = nf_xcalloc((size_t)(n - i) + 1, sizeof(*after));
    for (j = n - 1; j >= i; j--)
        after[j - i] = cJSON_DetachItemFromArray(arr, j);
    if (!cJSON_AddItemToArray(arr, doc))
        abort();
    for (j = 0; j < n - i; j++)
        if (!cJSON_AddItemToArray(arr, after[j]))
            abort();
    free(after);
}

void sched_list_merge(cJSON *pg, const struct sched_list_query *q, const char *const *docs,
                      size_t ndocs, bool *has_more)
{
    int n = cJSON_GetArraySize(pg);
    char lowest[NF_ID_MAX] = "";
    const char *id;
    cJSON *doc;
    size_t i;

    if (n > q->limit) /* Postgres has more: nothing below its last row belongs here */
        snprintf(lowest, sizeof(lowest), "%s",
                 nf_json_str(cJSON_GetArrayItem(pg, n - 1), "job_id"));
    for (i = 0; i < ndocs; i++) {
        doc = docs[i] ? nf_json_parse(docs[i], strlen(docs[i])) : NULL;
        id = nf_json_str(doc, "job_id");
        if (!id || !nf_id_valid("job", id) || in_array(pg, id) ||
            (q->after[0] && strcmp(id, q->after) >= 0) || (lowest[0] && strcmp(id, lowest) < 0) ||
            !matches(q, doc)) {
            cJSON_Delete(doc);
            continue;
        }
        insert_sorted(pg, doc);
    }
    n = cJSON_GetArraySize(pg);
    *has_more = n > q->limit;
    while (n > q->limit)
        cJSON_DeleteItemFromArray(pg, --n);
}
