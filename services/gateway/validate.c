/*
 * Job request validation (DESIGN §4): one table of params per job type plus the common
 * fields. Pure functions: no I/O, no context, so every rule is unit-tested.
 *
 *   body --shape--> nested {"params":{..}, common...} | flat {param..., common...}
 *        --keys---> every key known for the type, none twice      (else 422 naming it)
 *        --params-> required present, types, bounds, defaults     (table below)
 *        --common-> metadata, priority, max_attempts, timeout_seconds, gpu_*, labels
 *        --> normalised request {"params", every common field}
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gw.h"
#include "nf_id.h"
#include "nf_json.h"

enum pkind {
    P_STR,     /* non-empty string of at most max bytes */
    P_INT,     /* integer in [min, max] */
    P_RATE,    /* number in (0, 1] */
    P_FRAC,    /* number in [0, 1) */
    P_NUM,     /* number in (0, max] */
    P_BOOL,    /* true or false */
    P_URI,     /* s3:// or artifact:// (gw_validate_uri) */
    P_MODEL,   /* a model name or artifact://, at most max bytes (model_ref_valid) */
    P_STRLIST, /* array of at most max non-empty strings of at most 64 bytes */
    P_ENUM,    /* one of choices */
    P_REGION,  /* cloud region name, e.g. us-east-1 */
    P_MNAME,   /* a name for a new model: 1..64 of [a-z0-9._-] (gw_model_name_valid) */
    P_RANGE,   /* number in [0, max] */
};

struct pspec {
    const char *name;
    const char *const *choices; /* P_ENUM: NULL-terminated */
    const char *def_str;        /* default of a string kind, NULL for none */
    long long min, max;         /* P_INT bounds; P_STR and P_STRLIST use max */
    long long def_int;          /* default of P_INT when has_def */
    enum pkind kind;
    bool required;
    bool has_def;
};

struct tspec {
    const char *type;
    const struct pspec *params;
    size_t n;
    /* Cross-field rules on the normalised params; NULL when none. */
    int (*check)(const cJSON *params, struct nf_json_err *err);
};

#define NAME_MAX_LEN 256 /* model names */
#define DOMAIN_MAX_LEN 128
#define URI_MAX_LEN 2048
#define MAP_MAX_ENTRIES 16
#define MAP_KEY_MAX 64
#define MAP_VAL_MAX 512
#define STRLIST_ITEM_MAX 64
#define GPU_TYPE_MAX 64
#define REGION_MAX 32
#define SAMPLES_MAX 1000000
#define SEED_MAX 9007199254740991LL /* 2^53 - 1: exact in every JSON parser */

static const char *const formats[] = {"jsonl", "parquet", NULL};
static const char *const benchmarks[] = {"mmlu", "gsm8k", "hellaswag", "arc_easy", "custom", NULL};
static const char *const train_methods[] = {"lora", "full", NULL};
static const char *const gen_tasks[] = {"instruction", "qa", "chat", NULL};
static const char *const distill_methods[] = {"sequence", "logits", NULL};

/* name, choices, default string, min, max, default int, kind, required, has default */
static const struct pspec generate_params[] = {
    {"domain", NULL, NULL, 0, DOMAIN_MAX_LEN, 0, P_STR, true, false},
    {"num_samples", NULL, NULL, 1, SAMPLES_MAX, 0, P_INT, true, false},
    {"model", NULL, NULL, 0, NAME_MAX_LEN, 0, P_STR, false, false},
    {"seed", NULL, NULL, 0, SEED_MAX, 0, P_INT, false, false},
    {"format", formats, "jsonl", 0, 0, 0, P_ENUM, false, false},
    /* a model writes the rows (handlers/_generate.py) unless generator is "template" */
    {"generator", NULL, NULL, 0, NAME_MAX_LEN, 0, P_MODEL, false, false},
    {"task", gen_tasks, NULL, 0, 0, 0, P_ENUM, false, false},
    {"seed_topics", NULL, NULL, 0, 1000, 0, P_STRLIST, false, false},
    {"dataset_uri", NULL, NULL, 0, 0, 0, P_URI, false, false},
    {"temperature", NULL, NULL, 0, 2, 0, P_RANGE, false, false},
    {"system_prompt", NULL, NULL, 0, 4000, 0, P_STR, false, false},
    {"output_format", formats, NULL, 0, 0, 0, P_ENUM, false, false},
    {"max_tokens", NULL, NULL, 8, 1024, 0, P_INT, false, false},
    {"near_duplicate_threshold", NULL, NULL, 0, 1, 0, P_NUM, false, false},
};
static const struct pspec audit_params[] = {
    {"dataset_uri", NULL, NULL, 0, 0, 0, P_URI, true, false},
    {"checks", NULL, NULL, 0, 32, 0, P_STRLIST, false, false},
    {"near_duplicate_threshold", NULL, NULL, 0, 0, 0, P_RATE, false, false},
    {"tokenizer_model", NULL, NULL, 0, NAME_MAX_LEN, 0, P_MODEL, false, false},
    {"max_seq_length", NULL, NULL, 1, 1000000, 0, P_INT, false, false},
    {"fix", NULL, NULL, 0, 0, 0, P_BOOL, false, false},
    /* a model scoring rows 1-5 (handlers/_audit_judge.py): resolved like model_id */
    {"judge", NULL, NULL, 0, NAME_MAX_LEN, 0, P_MODEL, false, false},
    {"judge_max_rows", NULL, NULL, 1, 10000, 0, P_INT, false, false},
};
/* What handlers/audit checks (its CHECKS); "judge" is one too, with params.judge. */
static const char *const audit_checks[] = {
    "duplicates",      "near_duplicates", "pii",          "language", "token_lengths",
    "training_format", "empty_fields",    "length_stats", "schema",   NULL};
static const struct pspec distill_params[] = {
    {"teacher_model", NULL, NULL, 0, NAME_MAX_LEN, 0, P_MODEL, true, false},
    {"student_model", NULL, NULL, 0, NAME_MAX_LEN, 0, P_MODEL, true, false},
    {"dataset_uri", NULL, NULL, 0, 0, 0, P_URI, true, false},
    {"num_samples", NULL, NULL, 1, SAMPLES_MAX, 0, P_INT, false, false},
    {"method", distill_methods, NULL, 0, 0, 0, P_ENUM, false, false},
    {"max_tokens", NULL, NULL, 1, 4096, 0, P_INT, false, false},
    {"temperature", NULL, NULL, 0, 2, 0, P_RANGE, false, false},
    {"system_prompt", NULL, NULL, 0, 4000, 0, P_STR, false, false},
    {"holdout", NULL, NULL, 0, 0, 0, P_FRAC, false, false},
    {"epochs", NULL, NULL, 1, 100, 0, P_INT, false, false},
    {"batch_size", NULL, NULL, 1, 4096, 0, P_INT, false, false},
    {"learning_rate", NULL, NULL, 0, 0, 0, P_RATE, false, false},
    {"train_method", train_methods, NULL, 0, 0, 0, P_ENUM, false, false},
    {"max_seq_length", NULL, NULL, 8, 512, 0, P_INT, false, false},
    {"seed", NULL, NULL, 0, SEED_MAX, 0, P_INT, false, false},
    {"kd_temperature", NULL, NULL, 0, 100, 0, P_NUM, false, false},
    {"kd_alpha", NULL, NULL, 0, 0, 0, P_RATE, false, false},
    {"max_chars", NULL, NULL, 1, 1000000, 0, P_INT, false, false},
    {"checkpoint_every", NULL, NULL, 1, 1000000, 0, P_INT, false, false},
    {"output_model", NULL, NULL, 0, 0, 0, P_MNAME, false, false},
};
static const struct pspec train_params[] = {
    {"model_id", NULL, NULL, 0, NAME_MAX_LEN, 0, P_MODEL, true, false},
    {"dataset_uri", NULL, NULL, 0, 0, 0, P_URI, true, false},
    {"validation_uri", NULL, NULL, 0, 0, 0, P_URI, false, false},
    {"epochs", NULL, NULL, 1, 100, 3, P_INT, false, true},
    {"learning_rate", NULL, NULL, 0, 0, 0, P_RATE, false, false},
    {"learning_rate_multiplier", NULL, NULL, 0, 100, 0, P_NUM, false, false},
    {"lora", NULL, NULL, 0, 0, 0, P_BOOL, false, false}, /* false: method full */
    {"method", train_methods, NULL, 0, 0, 0, P_ENUM, false, false},
    {"lora_r", NULL, NULL, 1, 1024, 0, P_INT, false, false},
    {"lora_alpha", NULL, NULL, 0, 1000000, 0, P_NUM, false, false},
    {"lora_dropout", NULL, NULL, 0, 0, 0, P_FRAC, false, false},
    {"batch_size", NULL, NULL, 1, 4096, 0, P_INT, false, false},
    {"warmup_ratio", NULL, NULL, 0, 0, 0, P_FRAC, false, false},
    {"max_seq_length", NULL, NULL, 8, 512, 0, P_INT, false, false},
    {"seed", NULL, NULL, 0, SEED_MAX, 0, P_INT, false, false},
    {"train_on_inputs", NULL, NULL, 0, 0, 0, P_BOOL, false, false},
    {"validation_split", NULL, NULL, 0, 0, 0, P_FRAC, false, false},
    {"merge", NULL, NULL, 0, 0, 0, P_BOOL, false, false},
    {"metric_every", NULL, NULL, 1, 1000000, 0, P_INT, false, false},
    {"output_model", NULL, NULL, 0, 0, 0, P_MNAME, false, false},
    {"from_checkpoint", NULL, NULL, 0, 0, 0, P_URI, false, false}, /* artifact:// only */
    {"early_stopping_patience", NULL, NULL, 1, 100, 0, P_INT, false, false},
};
static const struct pspec evaluate_params[] = {
    {"model_id", NULL, NULL, 0, NAME_MAX_LEN, 0, P_MODEL, true, false},
    {"benchmark", benchmarks, NULL, 0, 0, 0, P_ENUM, true, false},
    {"dataset_uri", NULL, NULL, 0, 0, 0, P_URI, false, false},
    {"compare_to", NULL, NULL, 0, NAME_MAX_LEN, 0, P_MODEL, false, false},
};
static const struct pspec deploy_params[] = {
    {"model_id", NULL, NULL, 0, NAME_MAX_LEN, 0, P_MODEL, true, false},
    {"region", NULL, "us-east-1", 0, 0, 0, P_REGION, false, false},
    {"replicas", NULL, NULL, 1, 64, 1, P_INT, false, true},
};

/* train: one way to hold out validation data; lora=false and method=lora disagree;
 * early stopping watches the validation loss, so it needs validation data given. */
static int train_check(const cJSON *params, struct nf_json_err *err)
{
    const char *method = nf_json_str(params, "method");
    const cJSON *lora = cJSON_GetObjectItemCaseSensitive(params, "lora");
    const cJSON *split = cJSON_GetObjectItemCaseSensitive(params, "validation_split");

    if (cJSON_GetObjectItemCaseSensitive(params, "validation_uri") &&
        cJSON_GetObjectItemCaseSensitive(params, "validation_split"))
        return nf_json_fail(err, "validation_split",
                            "give validation_uri or validation_split, not both");
    if (method && lora && cJSON_IsTrue(lora) != (strcmp(method, "lora") == 0))
        return nf_json_fail(err, "lora", "lora contradicts method (lora is the older spelling)");
    const char *ckpt = nf_json_str(params, "from_checkpoint");
    if (ckpt && strncmp(ckpt, "artifact://", 11) != 0)
        return nf_json_fail(err, "from_checkpoint",
                            "must be artifact://<id> of a checkpoint artifact of yours "
                            "(GET /api/jobs/{id}/checkpoints lists a job's)");
    if (cJSON_GetObjectItemCaseSensitive(params, "early_stopping_patience") &&
        !cJSON_GetObjectItemCaseSensitive(params, "validation_uri") &&
        !(cJSON_IsNumber(split) && split->valuedouble > 0))
        return nf_json_fail(err, "early_stopping_patience",
                            "early_stopping_patience needs validation data: give validation_uri "
                            "or a validation_split above 0");
    return 0;
}

/* audit: every check is one the handler knows; the judge check names its model. */
static int audit_check(const cJSON *params, struct nf_json_err *err)
{
    const cJSON *checks = cJSON_GetObjectItemCaseSensitive(params, "checks"), *it;
    size_t i;

    if (checks && cJSON_GetArraySize(checks) == 0)
        return nf_json_fail(err, "checks", "checks must name at least one check");
    cJSON_ArrayForEach(it, checks)
    {
        if (strcmp(it->valuestring, "judge") == 0) {
            if (!cJSON_GetObjectItemCaseSensitive(params, "judge"))
                return nf_json_fail(err, "judge",
                                    "the judge check needs a model: name it in judge (a provider "
                                    "model such as gpt-4, one of your deployments or models)");
            continue;
        }
        for (i = 0; audit_checks[i]; i++)
            if (strcmp(it->valuestring, audit_checks[i]) == 0)
                break;
        if (!audit_checks[i])
            return nf_json_fail(err, "checks",
                                "unknown check \"%s\" (known: duplicates, near_duplicates, pii, "
                                "language, token_lengths, training_format, empty_fields, "
                                "length_stats, schema, judge)",
                                it->valuestring);
    }
    return 0;
}

/* generate: seed_topics or a seed dataset, not both (output_format, when given, wins over
 * format, its older name, which defaults to jsonl). */
static int generate_check(const cJSON *params, struct nf_json_err *err)
{
    if (cJSON_GetObjectItemCaseSensitive(params, "seed_topics") &&
        cJSON_GetObjectItemCaseSensitive(params, "dataset_uri"))
        return nf_json_fail(err, "seed_topics", "give seed_topics or dataset_uri, not both");
    return 0;
}

/* evaluate: dataset_uri goes with benchmark "custom", and only with it. */
static int evaluate_check(const cJSON *params, struct nf_json_err *err)
{
    const char *bench = nf_json_str(params, "benchmark");
    bool has_uri = cJSON_GetObjectItemCaseSensitive(params, "dataset_uri") != NULL;

    if (bench && strcmp(bench, "custom") == 0 && !has_uri)
        return nf_json_fail(err, "dataset_uri", "dataset_uri is required when benchmark is custom");
    if (bench && strcmp(bench, "custom") != 0 && has_uri)
        return nf_json_fail(err, "dataset_uri",
                            "dataset_uri is only allowed when benchmark is custom");
    return 0;
}

#define TSPEC(t, p, c)                                                                             \
    {                                                                                              \
        (t), (p), sizeof(p) / sizeof((p)[0]), (c)                                                  \
    }

/* In the order of nf_job_types. */
static const struct tspec types[NF_NJOB_TYPES] = {
    TSPEC("generate", generate_params, generate_check),
    TSPEC("audit", audit_params, audit_check),
    TSPEC("distill", distill_params, NULL),
    TSPEC("train", train_params, train_check),
    TSPEC("evaluate", evaluate_params, evaluate_check),
    TSPEC("deploy", deploy_params, NULL),
};

/* The fields every job type takes besides its params; index = bit in the seen mask. */
static const char *const common_fields[] = {
    "metadata", "priority", "max_attempts", "timeout_seconds", "gpu_type", "gpu_count", "labels"};
#define NCOMMON (sizeof(common_fields) / sizeof(common_fields[0]))
#define PARAMS_BIT NCOMMON /* the "params" key of the nested shape */

/* true when s has no control characters, spaces or DEL. */
static bool printable_no_space(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s == 0x7f)
            return false;
    return true;
}

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool bucket_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-';
}

static bool alnum_lower(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

bool gw_s3_uri_valid(const char *uri)
{
    const char *b, *k, *seg;
    size_t n;

    if (!uri || strncmp(uri, "s3://", 5) != 0)
        return false;
    b = uri + 5;
    k = strchr(b, '/');
    if (!k || k - b < 1 || k - b > 63 || !alnum_lower(b[0]) || !alnum_lower(k[-1]))
        return false;
    for (; b < k; b++)
        if (!bucket_char(*b))
            return false;
    k++; /* the key: 1..1024 printable bytes, no space or backslash, clean segments */
    n = strlen(k);
    if (n == 0 || n > GW_S3_KEY_MAX || !printable_no_space(k) || strchr(k, '\\'))
        return false;
    for (seg = k; seg; seg = strchr(seg, '/') ? strchr(seg, '/') + 1 : NULL) {
        n = strcspn(seg, "/");
        if (n == 0 || (n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
            return false;
    }
    return true;
}

bool gw_validate_uri(const char *uri)
{
    if (!uri || strlen(uri) > URI_MAX_LEN || !printable_no_space(uri))
        return false;
    if (starts_with(uri, "artifact://"))
        return nf_id_valid("art", uri + strlen("artifact://"));
    return gw_s3_uri_valid(uri);
}

/* A model name, or artifact://art_<ULID>; never a path or any other URI scheme. */
static bool model_ref_valid(const char *s)
{
    if (starts_with(s, "artifact://"))
        return nf_id_valid("art", s + strlen("artifact://"));
    return !strstr(s, "://") && strncmp(s, "file:", 5) != 0 && s[0] != '/';
}

bool gw_model_name_valid(const char *s, bool capitals)
{
    size_t n = s ? strlen(s) : 0, i;

    if (n == 0 || n > GW_MODEL_NAME_MAX)
        return false;
    for (i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '.' ||
              s[i] == '_' || s[i] == '-' || (capitals && s[i] >= 'A' && s[i] <= 'Z')))
            return false;
    return true;
}

static bool region_valid(const char *s)
{
    size_t n = strlen(s), i;

    if (n == 0 || n > REGION_MAX || s[0] == '-' || s[n - 1] == '-')
        return false;
    for (i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return false;
    return true;
}

static cJSON *dup_item(const cJSON *it)
{
    cJSON *c = cJSON_Duplicate(it, true);

    if (!c)
        abort();
    return c;
}

static void add_item(cJSON *obj, const char *key, cJSON *it)
{
    if (!cJSON_AddItemToObject(obj, key, it)) /* it is now owned by obj */
        abort();
}

/* A string value of at most max bytes, not empty. */
static int get_name(const cJSON *src, const char *key, bool required, size_t max, const char **out,
                    struct nf_json_err *err)
{
    const char *s;
    int rc = nf_json_get_str(src, key, required, &s, err);

    if (rc != 0)
        return rc;
    if (s[0] == '\0' || strlen(s) > max)
        return nf_json_fail(err, key, "%s must be a non-empty string of at most %zu characters",
                            key, max);
    *out = s;
    return 0;
}

static int get_strlist(const cJSON *src, const struct pspec *ps, cJSON *dst,
                       struct nf_json_err *err)
{
    const cJSON *arr, *it;
    int rc = nf_json_get_arr(src, ps->name, ps->required, &arr, err);

    if (rc != 0)
        return rc;
    if (cJSON_GetArraySize(arr) > ps->max)
        return nf_json_fail(err, ps->name, "%s must have at most %lld entries", ps->name, ps->max);
    cJSON_ArrayForEach(it, arr)
    {
        if (!cJSON_IsString(it) || it->valuestring[0] == '\0' ||
            strlen(it->valuestring) > STRLIST_ITEM_MAX)
            return nf_json_fail(err, ps->name,
                                "%s must be a list of non-empty strings of at most %d "
                                "characters",
                                ps->name, STRLIST_ITEM_MAX);
    }
    add_item(dst, ps->name, dup_item(arr));
    return 0;
}

#define MUST_URI                                                                                   \
    "an s3://<bucket>/<key> URI of your uploaded files or an artifact://art_<id> URI (file:// "    \
    "and https:// are not accepted: upload the data with POST /api/files)"
#define MUST_MODEL                                                                                 \
    "a model name or an artifact://art_<id> URI (paths and other URI schemes are not "             \
    "accepted)"
#define MUST_REGION "a region name such as us-east-1 (lowercase letters, digits and dashes)"
#define MUST_MNAME "1 to 64 characters of a-z, 0-9, '.', '_' and '-'"

/* Reads one param of src into dst (defaults applied); -1 with err on a bad value. */
static int param_one(const struct pspec *ps, const cJSON *src, cJSON *dst, struct nf_json_err *err)
{
    const char *s = NULL;
    long long v = 0;
    double d = 0;
    bool b = false;
    size_t i;
    int rc;

    switch (ps->kind) {
    case P_STR:
        rc = get_name(src, ps->name, ps->required, (size_t)ps->max, &s, err);
        break;
    case P_MODEL:
        rc = get_name(src, ps->name, ps->required, (size_t)ps->max, &s, err);
        if (rc == 0 && !model_ref_valid(s))
            return nf_json_fail(err, ps->name, "%s must be %s", ps->name, MUST_MODEL);
        break;
    case P_INT:
        rc = nf_json_get_int(src, ps->name, ps->required, ps->min, ps->max, &v, err);
        if (rc == NF_JSON_ABSENT && ps->has_def) {
            v = ps->def_int;
            rc = 0;
        }
        if (rc == 0)
            nf_json_add_int(dst, ps->name, v);
        return rc < 0 ? -1 : 0;
    case P_RATE:
        rc = nf_json_get_num(src, ps->name, ps->required, 0, 1, &d, err);
        if (rc == 0 && d <= 0)
            rc = -1;
        if (rc < 0)
            return nf_json_fail(err, ps->name, "%s must be a number greater than 0 and at most 1",
                                ps->name);
        if (rc == 0 && !cJSON_AddNumberToObject(dst, ps->name, d))
            abort();
        return 0;
    case P_FRAC:
    case P_NUM:
        rc = nf_json_get_num(src, ps->name, ps->required, 0,
                             ps->kind == P_FRAC ? 1 : (double)ps->max, &d, err);
        if (rc == 0 && (ps->kind == P_FRAC ? d >= 1 : d <= 0))
            rc = -1;
        if (rc < 0 && ps->kind == P_FRAC)
            return nf_json_fail(err, ps->name, "%s must be a number at least 0 and below 1",
                                ps->name);
        if (rc < 0)
            return nf_json_fail(err, ps->name,
                                "%s must be a number greater than 0 and at most %lld", ps->name,
                                ps->max);
        if (rc == 0 && !cJSON_AddNumberToObject(dst, ps->name, d))
            abort();
        return 0;
    case P_RANGE:
        rc = nf_json_get_num(src, ps->name, ps->required, 0, (double)ps->max, &d, err);
        if (rc < 0)
            return nf_json_fail(err, ps->name, "%s must be a number from 0 to %lld", ps->name,
                                ps->max);
        if (rc == 0 && !cJSON_AddNumberToObject(dst, ps->name, d))
            abort();
        return 0;
    case P_BOOL:
        rc = nf_json_get_bool(src, ps->name, ps->required, &b, err);
        if (rc == 0 && !cJSON_AddBoolToObject(dst, ps->name, b))
            abort();
        return rc < 0 ? -1 : 0;
    case P_URI:
    case P_REGION:
        rc = nf_json_get_str(src, ps->name, ps->required, &s, err);
        if (rc == 0 && !(ps->kind == P_URI ? gw_validate_uri(s) : region_valid(s)))
            return nf_json_fail(err, ps->name, "%s must be %s", ps->name,
                                ps->kind == P_URI ? MUST_URI : MUST_REGION);
        break;
    case P_MNAME:
        rc = nf_json_get_str(src, ps->name, ps->required, &s, err);
        if (rc == 0 && !gw_model_name_valid(s, false))
            return nf_json_fail(err, ps->name, "%s must be %s", ps->name, MUST_MNAME);
        break;
    case P_STRLIST:
        return get_strlist(src, ps, dst, err) < 0 ? -1 : 0;
    case P_ENUM:
        rc = nf_json_get_str(src, ps->name, ps->required, &s, err);
        if (rc != 0)
            break;
        for (i = 0; ps->choices[i]; i++)
            if (strcmp(s, ps->choices[i]) == 0)
                break;
        if (!ps->choices[i]) {
            char list[128] = "";
            for (i = 0; ps->choices[i]; i++) {
                if (i > 0)
                    strncat(list, ", ", sizeof(list) - strlen(list) - 1);
                strncat(list, ps->choices[i], sizeof(list) - strlen(list) - 1);
            }
            return nf_json_fail(err, ps->name, "%s must be one of %s", ps->name, list);
        }
        break;
    default:
        return nf_json_fail(err, ps->name, "%s has an unsupported type", ps->name);
    }
    if (rc < 0)
        return -1;
    if (rc == NF_JSON_ABSENT)
        s = ps->def_str;
    if (s)
        nf_json_add_str(dst, ps->name, s);
    return 0;
}

static int common_index(const char *key)
{
    size_t i;

    for (i = 0; i < NCOMMON; i++)
        if (strcmp(key, common_fields[i]) == 0)
            return (int)i;
    return -1;
}

static int param_index(const struct tspec *t, const char *key)
{
    size_t i;

    for (i = 0; i < t->n; i++)
        if (strcmp(key, t->params[i].name) == 0)
            return (int)i;
    return -1;
}

/*
 * Checks the top-level keys of body: common fields, then "params" (nested shape) or the
 * type's params (flat shape). Anything else, or a key given twice, fails.
 */
static int check_top_keys(const struct tspec *t, const cJSON *body, bool nested,
                          struct nf_json_err *err)
{
    const cJSON *it;
    uint64_t seen = 0, bit;
    int idx;

    cJSON_ArrayForEach(it, body)
    {
        idx = common_index(it->string);
        if (idx >= 0)
            bit = 1ULL << idx;
        else if (nested && strcmp(it->string, "params") == 0)
            bit = 1ULL << PARAMS_BIT;
        else if (!nested && (idx = param_index(t, it->string)) >= 0)
            bit = 1ULL << (PARAMS_BIT + 1 + (size_t)idx);
        else if (nested)
            return nf_json_fail(err, it->string, "unknown field \"%s\" (job params go in params)",
                                it->string);
        else
            return nf_json_fail(err, it->string, "unknown field \"%s\" for a %s job", it->string,
                                t->type);
        if (seen & bit)
            return nf_json_fail(err, it->string, "duplicate key \"%s\"", it->string);
        seen |= bit;
    }
    return 0;
}

/* Checks the keys of the nested params object against the type's table. */
static int check_param_keys(const struct tspec *t, const cJSON *params, struct nf_json_err *err)
{
    const cJSON *it;
    uint64_t seen = 0, bit;
    int idx;

    cJSON_ArrayForEach(it, params)
    {
        idx = param_index(t, it->string);
        if (idx < 0)
            return nf_json_fail(err, it->string, "unknown parameter \"%s\" for a %s job",
                                it->string, t->type);
        bit = 1ULL << idx;
        if (seen & bit)
            return nf_json_fail(err, it->string, "duplicate key \"%s\"", it->string);
        seen |= bit;
    }
    return 0;
}

/* metadata / labels: at most 16 string pairs, keys 1..64 bytes, values up to 512 bytes. */
static int get_string_map(const cJSON *body, const char *key, cJSON *dst, struct nf_json_err *err)
{
    const cJSON *map = NULL, *it, *other;
    int rc = nf_json_get_obj(body, key, false, &map, err);

    if (rc < 0)
        return -1;
    if (rc == NF_JSON_ABSENT) {
        add_item(dst, key, nf_json_obj());
        return 0;
    }
    if (cJSON_GetArraySize(map) > MAP_MAX_ENTRIES)
        return nf_json_fail(err, key, "%s must have at most %d entries", key, MAP_MAX_ENTRIES);
    cJSON_ArrayForEach(it, map)
    {
        if (it->string[0] == '\0' || strlen(it->string) > MAP_KEY_MAX)
            return nf_json_fail(err, key, "%s keys must be 1 to %d characters long", key,
                                MAP_KEY_MAX);
        if (!cJSON_IsString(it))
            return nf_json_fail(err, key, "%s[\"%s\"] must be a string", key, it->string);
        if (strlen(it->valuestring) > MAP_VAL_MAX)
            return nf_json_fail(err, key, "%s[\"%s\"] must be at most %d characters long", key,
                                it->string, MAP_VAL_MAX);
        for (other = map->child; other != it; other = other->next)
            if (strcmp(other->string, it->string) == 0)
                return nf_json_fail(err, key, "%s has the key \"%s\" twice", key, it->string);
    }
    add_item(dst, key, dup_item(map));
    return 0;
}

static int get_common_int(const cJSON *body, const char *key, long long min, long long max,
                          long long def, cJSON *dst, struct nf_json_err *err)
{
    long long v = def;

    if (nf_json_get_int(body, key, false, min, max, &v, err) < 0)
        return -1;
    nf_json_add_int(dst, key, v);
    return 0;
}

/* The common fields of DESIGN §4 into dst, in the job object's order. */
static int common_all(const cJSON *body, cJSON *dst, struct nf_json_err *err)
{
    const char *gpu_type = NULL;

    if (get_string_map(body, "metadata", dst, err) < 0 ||
        get_common_int(body, "priority", 0, 9, 5, dst, err) < 0 ||
        get_common_int(body, "max_attempts", 1, 10, 3, dst, err) < 0 ||
        get_common_int(body, "timeout_seconds", 1, 604800, 3600, dst, err) < 0)
        return -1;
    if (get_name(body, "gpu_type", false, GPU_TYPE_MAX, &gpu_type, err) < 0)
        return -1;
    nf_json_add_str(dst, "gpu_type", gpu_type);
    if (get_common_int(body, "gpu_count", 0, 16, 1, dst, err) < 0 ||
        get_string_map(body, "labels", dst, err) < 0)
        return -1;
    return 0;
}

/* deploy: the region picks the workers labelled region=<it> (DESIGN §4): params.region
 * (default us-east-1) becomes labels.region; a labels.region that says otherwise is a 422. */
static int region_label(cJSON *req, struct nf_json_err *err)
{
    const char *region = nf_json_str(cJSON_GetObjectItemCaseSensitive(req, "params"), "region");
    cJSON *labels = cJSON_GetObjectItemCaseSensitive(req, "labels");
    const char *given = nf_json_str(labels, "region");

    if (region == NULL || !cJSON_IsObject(labels))
        return 0;
    if (given != NULL && strcmp(given, region) != 0)
        return nf_json_fail(err, "region", "region %s and labels.region %s disagree: give one",
                            region, given);
    if (given == NULL)
        nf_json_add_str(labels, "region", region);
    return 0;
}

int gw_validate_job(const char *job_type, const cJSON *body, cJSON **out, struct nf_json_err *err)
{
    const struct tspec *t;
    const cJSON *src;
    cJSON *req, *params;
    size_t i;
    int idx = nf_job_type_index(job_type);

    if (idx < 0)
        return nf_json_fail(err, "job_type", "unknown job type");
    t = &types[idx];
    if (!cJSON_IsObject(body))
        return nf_json_fail(err, "body", "the body must be a JSON object");
    src = cJSON_GetObjectItemCaseSensitive(body, "params");
    if (src && !cJSON_IsObject(src))
        return nf_json_fail(err, "params", "params must be an object");
    if (check_top_keys(t, body, src != NULL, err) < 0)
        return -1;
    if (src && check_param_keys(t, src, err) < 0)
        return -1;
    if (!src)
        src = body; /* flat shape: the params sit next to the common fields */

    req = nf_json_obj();
    params = nf_json_obj();
    add_item(req, "params", params); /* params is now owned by req */
    for (i = 0; i < t->n; i++)
        if (param_one(&t->params[i], src, params, err) < 0)
            goto fail;
    if (t->check && t->check(params, err) < 0)
        goto fail;
    if (common_all(body, req, err) < 0)
        goto fail;
    if (strcmp(job_type, "deploy") == 0 && region_label(req, err) < 0)
        goto fail;
    *out = req;
    return 0;

fail:
    cJSON_Delete(req);
    return -1;
}
