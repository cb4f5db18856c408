/*
 * nf_json: typed getters over cJSON that name the offending key, and allocation
 * shorthands that abort on out of memory.
 *
 * Every getter goes through lookup(): a missing key and a JSON null are the same
 * ("absent"); absent and required is an error, absent and optional is NF_JSON_ABSENT.
 */
#include "nf_json.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Doubles in [-2^63, 2^63) convert to long long without overflow. 2^63 itself is exactly
 * representable as a double, so the upper test is a strict "<".
 */
#define LL_LIMIT 9223372036854775808.0

int nf_json_fail(struct nf_json_err *err, const char *param, const char *fmt, ...)
{
    va_list ap;

    if (!err)
        return -1;
    snprintf(err->param, sizeof(err->param), "%s", param ? param : "");
    va_start(ap, fmt);
    /* NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): false positive, ap is started */
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    return -1;
}

/*
 * Finds key in obj. Returns 0 with *item set when present and not null, NF_JSON_ABSENT
 * when absent and optional, -1 (err filled) when absent and required. A NULL or
 * non-object obj has no keys.
 */
static int lookup(const cJSON *obj, const char *key, bool required, const cJSON **item,
                  struct nf_json_err *err)
{
    const cJSON *it = NULL;

    if (cJSON_IsObject(obj))
        it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!it || cJSON_IsNull(it)) {
        if (!required)
            return NF_JSON_ABSENT;
        nf_json_fail(err, key, "%s is required", key);
        return -1;
    }
    *item = it;
    return 0;
}

/* lookup() of a value that must pass is(): "<key> must be <what>" when it does not;
 * *item is set only on success. */
static int lookup_as(const cJSON *obj, const char *key, bool required,
                     cJSON_bool (*is)(const cJSON *), const char *what, const cJSON **item,
                     struct nf_json_err *err)
{
    const cJSON *it = NULL;
    int rc = lookup(obj, key, required, &it, err);

    if (rc != 0)
        return rc;
    if (!is(it)) {
        nf_json_fail(err, key, "%s must be %s", key, what);
        return -1;
    }
    *item = it;
    return 0;
}

static cJSON_bool is_str(const cJSON *it)
{
    return cJSON_IsString(it) && it->valuestring;
}

int nf_json_get_str(const cJSON *obj, const char *key, bool required, const char **out,
                    struct nf_json_err *err)
{
    const cJSON *it = NULL;
    int rc = lookup_as(obj, key, required, is_str, "a string", &it, err);

    if (rc == 0)
        *out = it->valuestring;
    return rc;
}

/* true when d is a whole number that fits a long long (*v set). */
static bool double_to_ll(double d, long long *v)
{
    if (!isfinite(d) || d < -LL_LIMIT || d >= LL_LIMIT || floor(d) != d)
        return false;
    *v = (long long)d;
    return true;
}

/* "must be an integer" plus the bounds unless they are the whole long long range. */
static int int_fail(struct nf_json_err *err, const char *key, long long min, long long max)
{
    if (min == LLONG_MIN && max == LLONG_MAX)
        return nf_json_fail(err, key, "%s must be an integer", key);
    return nf_json_fail(err, key, "%s must be an integer between %lld and %lld", key, min, max);
}

int nf_json_get_int(const cJSON *obj, const char *key, bool required, long long min, long long max,
                    long long *out, struct nf_json_err *err)
{
    const cJSON *it = NULL;
    long long v;
    int rc = lookup(obj, key, required, &it, err);

    if (rc != 0)
        return rc;
    if (!cJSON_IsNumber(it) || !double_to_ll(it->valuedouble, &v) || v < min || v > max)
        return int_fail(err, key, min, max);
    *out = v;
    return 0;
}

int nf_json_get_num(const cJSON *obj, const char *key, bool required, double min, double max,
                    double *out, struct nf_json_err *err)
{
    const cJSON *it = NULL;
    double d;
    int rc = lookup(obj, key, required, &it, err);

    if (rc != 0)
        return rc;
    d = cJSON_IsNumber(it) ? it->valuedouble : NAN;
    /* The negated test also refuses NaN, which compares false to everything. */
    if (!isfinite(d) || !(d >= min && d <= max))
        return nf_json_fail(err, key, "%s must be a number between %g and %g", key, min, max);
    *out = d;
    return 0;
}

int nf_json_get_bool(const cJSON *obj, const char *key, bool required, bool *out,
                     struct nf_json_err *err)
{
    const cJSON *it = NULL;
    int rc = lookup_as(obj, key, required, cJSON_IsBool, "a boolean", &it, err);

    if (rc == 0)
        *out = cJSON_IsTrue(it);
    return rc;
}

int nf_json_get_obj(const cJSON *obj, const char *key, bool required, const cJSON **out,
                    struct nf_json_err *err)
{
    return lookup_as(obj, key, required, cJSON_IsObject, "an object", out, err);
}

int nf_json_get_arr(const cJSON *obj, const char *key, bool required, const cJSON **out,
                    struct nf_json_err *err)
{
    return lookup_as(obj, key, required, cJSON_IsArray, "an array", out, err);
}

cJSON *nf_json_parse(const char *buf, size_t len)
{
    const char *end = NULL;
    cJSON *root;

    if (!buf || len == 0)
        return NULL;
    /*
     * cJSON's own "require_null_terminated" wants a NUL inside len, so it is off and the
     * trailing bytes are checked here: only whitespace may follow the value.
     */
    root = cJSON_ParseWithLengthOpts(buf, len, &end, false);
    if (!root)
        return NULL;
    while (end < buf + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
        end++;
    if (end != buf + len || !(cJSON_IsObject(root) || cJSON_IsArray(root))) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

char *nf_json_print(const cJSON *item)
{
    char *s = cJSON_PrintUnformatted(item);

    if (!s)
        abort();
    return s;
}

cJSON *nf_json_obj(void)
{
    cJSON *o = cJSON_CreateObject();

    if (!o)
        abort();
    return o;
}

cJSON *nf_json_add_str(cJSON *obj, const char *key, const char *val)
{
    cJSON *it = val ? cJSON_AddStringToObject(obj, key, val) : cJSON_AddNullToObject(obj, key);

    if (!it)
        abort();
    return it;
}

/* The number is stored as a double: exact up to 2^53, which covers every id and count. */
cJSON *nf_json_add_int(cJSON *obj, const char *key, long long val)
{
    cJSON *it = cJSON_AddNumberToObject(obj, key, (double)val);

    if (!it)
        abort();
    return it;
}

const char *nf_json_str(const cJSON *obj, const char *key)
{
    const cJSON *it = cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;

    return it && cJSON_IsString(it) ? it->valuestring : NULL;
}

long long nf_json_int(const cJSON *obj, const char *key, long long def)
{
    const cJSON *it = cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    long long v;

    if (it && cJSON_IsNumber(it) && double_to_ll(it->valuedouble, &v))
        return v;
    return def;
}
