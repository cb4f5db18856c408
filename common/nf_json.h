#pragma once
/*
 * nf_json: helpers over cJSON. The typed getters report which field is wrong so HTTP
 * handlers can answer 422 with `param` set.
 *
 * Return values of the getters: 0 found and valid (*out set), NF_JSON_ABSENT (1) when the
 * key is missing or JSON null and not required (*out untouched), -1 on error (err filled,
 * *out untouched). A required key that is missing is an error ("is required").
 */
#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

#define NF_JSON_ABSENT 1

struct nf_json_err {
    char param[128]; /* the offending key, dotted for nested keys by the caller */
    char msg[256];   /* "num_samples must be an integer between 1 and 1000000" */
};

int nf_json_get_str(const cJSON *obj, const char *key, bool required, const char **out,
                    struct nf_json_err *err);
int nf_json_get_int(const cJSON *obj, const char *key, bool required, long long min, long long max,
                    long long *out, struct nf_json_err *err);
int nf_json_get_num(const cJSON *obj, const char *key, bool required, double min, double max,
                    double *out, struct nf_json_err *err);
int nf_json_get_bool(const cJSON *obj, const char *key, bool required, bool *out,
                     struct nf_json_err *err);
/* Object / array members: *out points into obj (not a copy). */
int nf_json_get_obj(const cJSON *obj, const char *key, bool required, const cJSON **out,
                    struct nf_json_err *err);
int nf_json_get_arr(const cJSON *obj, const char *key, bool required, const cJSON **out,
                    struct nf_json_err *err);
/* Fills err (param, printf message); returns -1 for `return nf_json_fail(...)`. */
int nf_json_fail(struct nf_json_err *err, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Parses exactly len bytes; NULL if malformed or not an object/array at the top. */
cJSON *nf_json_parse(const char *buf, size_t len);
/* Compact serialisation, heap string (free()); aborts on out of memory. */
char *nf_json_print(const cJSON *item);
/* Shorthands that abort on out of memory instead of returning NULL. */
cJSON *nf_json_obj(void);
cJSON *nf_json_add_str(cJSON *obj, const char *key, const char *val); /* val NULL -> null */
cJSON *nf_json_add_int(cJSON *obj, const char *key, long long val);
/* String value of key or NULL (no error reporting): for trusted internal documents. */
const char *nf_json_str(const cJSON *obj, const char *key);
/* Integer value of key or def. */
long long nf_json_int(const cJSON *obj, const char *key, long long def);
