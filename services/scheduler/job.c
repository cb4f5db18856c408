/*
 * Pure helpers around the job: parsing the two kinds of messages the scheduler consumes,
 * and building the job object (internals.md, "Job events in detail") from a Postgres row.
 * sched_job_json() is the one builder behind both the job:<id> snapshot and
 * GET /internal/jobs/{job_id}.
 */
#include "sched.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_event.h"
#include "nf_id.h"
#include "nf_mem.h"
#include "nf_pg.h"

/* n decimal digits at s into *v; false if any is not a digit. */
static bool digits(const char *s, int n, int *v)
{
    int i;

    *v = 0;
    for (i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        *v = *v * 10 + (s[i] - '0');
    }
    return true;
}

bool sched_time_valid(const char *s)
{
    int y, mo, d, h, mi, sec, oh, om;

    if (!s || strlen(s) < 20)
        return false;
    if (!digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) || s[7] != '-' ||
        !digits(s + 8, 2, &d) || s[10] != 'T' || !digits(s + 11, 2, &h) || s[13] != ':' ||
        !digits(s + 14, 2, &mi) || s[16] != ':' || !digits(s + 17, 2, &sec))
        return false;
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
        return false;
    s += 19;
    if (*s == '.') {
        int n = 0;

        for (s++; isdigit((unsigned char)*s); s++)
            n++;
        if (n < 1 || n > 9)
            return false;
    }
    if (s[0] == 'Z')
        return s[1] == '\0';
    if ((s[0] == '+' || s[0] == '-') && digits(s + 1, 2, &oh) && s[3] == ':' &&
        digits(s + 4, 2, &om) && s[6] == '\0')
        return oh <= 23 && om <= 59;
    return false;
}

/* Optional object member: absent -> *out NULL; wrong type -> -1. */
static int opt_obj(const cJSON *data, const char *key, const cJSON **out, struct nf_json_err *err)
{
    *out = NULL;
    return nf_json_get_obj(data, key, false, out, err) < 0 ? -1 : 0;
}

bool sched_file_name_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0, i;

    if (n == 0 || n > 255 || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return false;
    for (i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f || s[i] == '/' || s[i] == '\\')
            return false;
    return true;
}

bool sched_input_valid(const cJSON *in, const char *user_id)
{
    static const char *const params[] = {
        "dataset_uri",   "validation_uri",  "model_id",   "teacher_model",
        "student_model", "from_checkpoint", "compare_to", "tokenizer_model",
        "generator",     "judge",           NULL};
    const char *param = nf_json_str(in, "param"), *key = nf_json_str(in, "object_key");
    const char *uri = nf_json_str(in, "uri");
    const cJSON *bytes = cJSON_GetObjectItemCaseSensitive(in, "bytes");
    char prefix[160];
    int i, n;

    if (!cJSON_IsObject(in) || !param || !uri || strlen(uri) > 2048 || !key || strlen(key) > 1200 ||
        strstr(key, "/../") || !sched_file_name_ok(nf_json_str(in, "name")) ||
        !cJSON_IsNumber(bytes) || bytes->valuedouble < 0 || bytes->valuedouble > 9.0e15)
        return false;
    for (i = 0; params[i] && strcmp(params[i], param) != 0; i++)
        ;
    n = snprintf(prefix, sizeof(prefix), "tenants/%s/", user_id);
    return params[i] && n > 0 && (size_t)n < sizeof(prefix) && strncmp(key, prefix, n) == 0 &&
           key[n] != '\0';
}

/* The optional inputs array: at most 8 entries, each sched_input_valid for the user. */
static int parse_inputs(const cJSON *data, const char *user_id, const cJSON **out,
                        struct nf_json_err *err)
{
    const cJSON *arr = NULL, *in;

    *out = NULL;
    if (nf_json_get_arr(data, "inputs", false, &arr, err) < 0)
        return -1;
    if (!arr)
        return 0;
    if (cJSON_GetArraySize(arr) > 8)
        return nf_json_fail(err, "inputs", "inputs has at most 8 entries");
    cJSON_ArrayForEach(in, arr)
    {
        if (!sched_input_valid(in, user_id))
            return nf_json_fail(err, "inputs",
                                "inputs entries are {param, uri, object_key under the "
                                "user's prefix, name, bytes}");
    }
    *out = arr;
    return 0;
}

int sched_request_parse(const cJSON *data, const char *subject, struct sched_request *out,
                        struct nf_json_err *err)
{
    struct sched_request r;
    const char *created = NULL;

    memset(&r, 0, sizeof(r));
    r.priority = 5;
    r.max_attempts = 3;
    r.gpu_count = -1;
    if (nf_json_get_str(data, "job_id", true, &r.job_id, err) < 0)
        return -1;
    if (!nf_id_valid("job", r.job_id))
        return nf_json_fail(err, "job_id", "job_id must be job_<ULID>");
    if (subject && strcmp(subject, r.job_id) != 0)
        return nf_json_fail(err, "subject", "subject must equal data.job_id");
    if (nf_json_get_str(data, "user_id", true, &r.user_id, err) < 0)
        return -1;
    if (r.user_id[0] == '\0' || strlen(r.user_id) > 128)
        return nf_json_fail(err, "user_id", "user_id must have 1 to 128 characters");
    if (nf_json_get_str(data, "job_type", true, &r.job_type, err) < 0)
        return -1;
    if (nf_job_type_index(r.job_type) < 0)
        return nf_json_fail(err, "job_type", "job_type %.32s is not a known job type", r.job_type);
    if (nf_json_get_obj(data, "params", true, &r.params, err) < 0)
        return -1;
    if (opt_obj(data, "metadata", &r.metadata, err) < 0 ||
        opt_obj(data, "labels", &r.labels, err) < 0)
        return -1;
    if (nf_json_get_int(data, "priority", false, 0, 9, &r.priority, err) < 0 ||
        nf_json_get_int(data, "max_attempts", false, 1, 10, &r.max_attempts, err) < 0 ||
        nf_json_get_int(data, "timeout_seconds", false, 1, 30LL * 24 * 3600, &r.timeout_seconds,
                        err) < 0 ||
        nf_json_get_int(data, "gpu_count", false, 0, 64, &r.gpu_count, err) < 0)
        return -1;
    if (nf_json_get_str(data, "gpu_type", false, &r.gpu_type, err) < 0)
        return -1;
    if (r.gpu_type && (r.gpu_type[0] == '\0' || strlen(r.gpu_type) > 64))
        return nf_json_fail(err, "gpu_type", "gpu_type must have 1 to 64 characters");
    if (nf_json_get_str(data, "created_at", false, &created, err) < 0)
        return -1;
    if (parse_inputs(data, r.user_id, &r.inputs, err) < 0)
        return -1;
    if (opt_obj(data, "models", &r.models, err) < 0)
        return -1;
    r.created_at = sched_time_valid(created) ? created : NULL;
    *out = r;
    return 0;
}

int sched_event_parse(const cJSON *ev, struct sched_event *out, const char **why)
{
    struct sched_event e;
    struct nf_json_err err;
    const char *type = NULL, *subject = NULL, *cls = NULL;
    long long attempt;

    memset(&e, 0, sizeof(e));
    e.data = nf_event_data(ev, &type, &subject, why);
    if (!e.data)
        return -1;
    if (sched_evtype_parse(type, &e.type) < 0) {
        *why = "unknown event type";
        return -1;
    }
    e.id = nf_json_str(ev, "id");
    if (strlen(e.id) > 128) {
        *why = "event id longer than 128 characters";
        return -1;
    }
    e.time = nf_json_str(ev, "time");
    if (!sched_time_valid(e.time))
        e.time = NULL;
    e.job_id = nf_json_str(e.data, "job_id");
    if (!e.job_id || !nf_id_valid("job", e.job_id)) {
        *why = "data.job_id must be job_<ULID>";
        return -1;
    }
    if (strcmp(e.job_id, subject) != 0) {
        *why = "subject must equal data.job_id";
        return -1;
    }
    if (nf_json_get_int(e.data, "attempt", true, 1, 1000, &attempt, &err) < 0) {
        *why = "data.attempt must be an integer between 1 and 1000";
        return -1;
    }
    e.attempt = (int)attempt;
    if (nf_json_get_str(e.data, "worker_id", false, &e.worker_id, &err) < 0 ||
        (e.worker_id && (e.worker_id[0] == '\0' || strlen(e.worker_id) > 128))) {
        *why = "data.worker_id must be a string of 1 to 128 characters";
        return -1;
    }
    switch (nf_json_get_num(e.data, "progress", e.type == SCHED_EV_PROGRESS, 0.0, 1.0, &e.progress,
                            &err)) {
    case 0:
        e.has_progress = true;
        break;
    case NF_JSON_ABSENT:
        break;
    default:
        *why = "data.progress must be a number between 0 and 1";
        return -1;
    }
    e.result = cJSON_GetObjectItemCaseSensitive(e.data, "result");
    if (cJSON_IsNull(e.result))
        e.result = NULL;
    if (nf_json_get_obj(e.data, "error", false, &e.error, &err) < 0) {
        *why = "data.error must be an object";
        return -1;
    }
    if (e.error && nf_json_get_str(e.error, "class", false, &cls, &err) < 0) {
        *why = "data.error.class must be a string";
        return -1;
    }
    e.cls = sched_fail_class_parse(cls);
    if (nf_json_get_arr(e.data, "artifacts", false, &e.artifacts, &err) < 0) {
        *why = "data.artifacts must be an array";
        return -1;
    }
    *out = e;
    return 0;
}

static bool str_len_ok(const char *s, size_t max)
{
    return s && s[0] != '\0' && strlen(s) <= max;
}

bool sched_sha256_hex(const char *s)
{
    int i;

    for (i = 0; i < 64; i++)
        if (!s[i] || !strchr("0123456789abcdef", s[i]))
            return false;
    return s[64] == '\0';
}

cJSON *sched_artifacts_clean(const cJSON *arr, int *dropped)
{
    cJSON *out = cJSON_CreateArray(), *o;
    const cJSON *a;
    struct nf_json_err err;
    const char *id, *name, *kind, *uri, *sha = NULL, *key;
    long long bytes;

    if (!out)
        abort();
    *dropped = 0;
    cJSON_ArrayForEach(a, arr)
    {
        id = nf_json_str(a, "artifact_id");
        name = nf_json_str(a, "name");
        kind = nf_json_str(a, "kind");
        uri = nf_json_str(a, "uri");
        key = nf_json_str(a, "object_key");
        sha = NULL;
        if (!cJSON_IsObject(a) || !id || !nf_id_valid("art", id) || !str_len_ok(name, 255) ||
            !str_len_ok(kind, 64) || !str_len_ok(uri, 2048) ||
            nf_json_get_int(a, "bytes", true, 0, 1LL << 53, &bytes, &err) < 0 ||
            nf_json_get_str(a, "sha256", false, &sha, &err) < 0 ||
            (sha && !sched_sha256_hex(sha)) ||
            (cJSON_GetObjectItemCaseSensitive(a, "object_key") && !str_len_ok(key, 1200))) {
            (*dropped)++;
            continue;
        }
        o = nf_json_obj();
        nf_json_add_str(o, "artifact_id", id);
        nf_json_add_str(o, "name", name);
        nf_json_add_str(o, "kind", kind);
        nf_json_add_str(o, "uri", uri);
        nf_json_add_int(o, "bytes", bytes);
        nf_json_add_str(o, "sha256", sha);
        nf_json_add_str(o, "object_key", key);
        if (!cJSON_AddItemToArray(out, o))
            abort();
    }
    return out;
}

void sched_job_from_row(const PGresult *res, int row, struct sched_job *job)
{
    memset(job, 0, sizeof(*job));
    job->job_id = nf_pg_val(res, row, "job_id");
    job->user_id = nf_pg_val(res, row, "user_id");
    job->job_type = nf_pg_val(res, row, "job_type");
    job->status = nf_pg_val(res, row, "status");
    job->params = nf_pg_val(res, row, "params");
    job->metadata = nf_pg_val(res, row, "metadata");
    job->labels = nf_pg_val(res, row, "labels");
    job->inputs = nf_pg_val(res, row, "inputs");
    job->models = nf_pg_val(res, row, "models");
    job->result = nf_pg_val(res, row, "result");
    job->error = nf_pg_val(res, row, "error");
    job->priority = nf_pg_val(res, row, "priority");
    job->attempt = nf_pg_val(res, row, "attempt");
    job->max_attempts = nf_pg_val(res, row, "max_attempts");
    job->timeout_seconds = nf_pg_val(res, row, "timeout_seconds");
    job->gpu_type = nf_pg_val(res, row, "gpu_type");
    job->gpu_count = nf_pg_val(res, row, "gpu_count");
    job->worker_id = nf_pg_val(res, row, "worker_id");
    job->progress = nf_pg_val(res, row, "progress");
    job->cost_micros = nf_pg_val(res, row, "cost_micros");
    job->cost_final = nf_pg_val(res, row, "cost_final");
    job->version = nf_pg_val(res, row, "version");
    job->created_at = nf_pg_val(res, row, "created_at");
    job->updated_at = nf_pg_val(res, row, "updated_at");
    job->started_at = nf_pg_val(res, row, "started_at");
    job->finished_at = nf_pg_val(res, row, "finished_at");
    job->artifacts = nf_pg_val(res, row, "artifacts");
    job->resume = nf_pg_val(res, row, "resume");
}

static void add_item(cJSON *o, const char *key, cJSON *item)
{
    if (!item)
        item = cJSON_CreateNull();
    if (!item || !cJSON_AddItemToObject(o, key, item))
        abort();
}

/* A JSON text column: parsed, or null when NULL or (never expected) malformed. */
static void add_json_text(cJSON *o, const char *key, const char *text)
{
    add_item(o, key, text ? cJSON_Parse(text) : NULL);
}

/* An integer column: a number, or null when NULL or not an integer. */
static void add_int_text(cJSON *o, const char *key, const char *text)
{
    char *end;
    long long v;

    if (!text || !*text) {
        add_item(o, key, NULL);
        return;
    }
    errno = 0;
    v = strtoll(text, &end, 10);
    if (errno || *end)
        add_item(o, key, NULL);
    else
        nf_json_add_int(o, key, v);
}

static long long int_or(const char *text, long long def)
{
    char *end;
    long long v;

    if (!text || !*text)
        return def;
    errno = 0;
    v = strtoll(text, &end, 10);
    return errno || *end ? def : v;
}

void sched_usd_format(long long micros, char out[32])
{
    unsigned long long u =
        micros < 0 ? 0ULL - (unsigned long long)micros : (unsigned long long)micros;

    snprintf(out, 32, "%s%llu.%06llu", micros < 0 ? "-" : "", u / 1000000ULL, u % 1000000ULL);
}

cJSON *sched_job_json(const struct sched_job *job)
{
    cJSON *o = nf_json_obj();
    char usd[32];
    char *end;
    double p;

    nf_json_add_str(o, "job_id", job->job_id);
    nf_json_add_str(o, "job_type", job->job_type);
    nf_json_add_str(o, "status", job->status);
    add_json_text(o, "params", job->params);
    add_json_text(o, "metadata", job->metadata);
    add_int_text(o, "priority", job->priority);
    add_int_text(o, "attempt", job->attempt);
    add_int_text(o, "max_attempts", job->max_attempts);
    add_int_text(o, "timeout_seconds", job->timeout_seconds);
    nf_json_add_str(o, "gpu_type", job->gpu_type);
    add_int_text(o, "gpu_count", job->gpu_count);
    add_json_text(o, "labels", job->labels);
    nf_json_add_str(o, "worker_id", job->worker_id);
    if (job->progress && (p = strtod(job->progress, &end), *end == '\0') && p >= 0 && p <= 1)
        add_item(o, "progress", cJSON_CreateNumber(p));
    else
        add_item(o, "progress", NULL);
    add_json_text(o, "result", job->result);
    add_json_text(o, "error", job->error);
    add_item(o, "artifacts", cJSON_Parse(job->artifacts ? job->artifacts : "[]"));
    sched_usd_format(int_or(job->cost_micros, 0), usd);
    nf_json_add_str(o, "cost_usd", usd);
    add_item(o, "cost_final",
             cJSON_CreateBool(job->cost_final && strcmp(job->cost_final, "t") == 0));
    nf_json_add_str(o, "created_at", job->created_at);
    nf_json_add_str(o, "updated_at", job->updated_at);
    nf_json_add_str(o, "started_at", job->started_at);
    nf_json_add_str(o, "finished_at", job->finished_at);
    return o;
}

cJSON *sched_dispatch_data(const struct sched_job *job)
{
    cJSON *o = nf_json_obj();

    nf_json_add_str(o, "job_id", job->job_id);
    nf_json_add_str(o, "user_id", job->user_id);
    nf_json_add_str(o, "job_type", job->job_type);
    add_json_text(o, "params", job->params);
    add_json_text(o, "metadata", job->metadata);
    add_int_text(o, "priority", job->priority);
    add_int_text(o, "max_attempts", job->max_attempts);
    add_int_text(o, "timeout_seconds", job->timeout_seconds);
    nf_json_add_str(o, "gpu_type", job->gpu_type);
    add_int_text(o, "gpu_count", job->gpu_count);
    add_json_text(o, "labels", job->labels);
    add_json_text(o, "inputs", job->inputs ? job->inputs : "[]");
    add_json_text(o, "models", job->models ? job->models : "{}");
    nf_json_add_str(o, "created_at", job->created_at);
    add_int_text(o, "attempt", job->attempt);
    /* additive: the job's newest checkpoint, which the worker fetches into NF_RESUME_DIR */
    if (job->resume && job->resume[0])
        add_json_text(o, "resume", job->resume);
    return o;
}

void sched_event_id(const char *kind, const char *job_id, int attempt, char *out, size_t len)
{
    nf_event_id(out, len, "evt", "%s:%s:%d", kind, job_id, attempt);
}

int sched_snap_from_job(const struct sched_job *job, struct sched_snap *out)
{
    cJSON *doc;

    if (!job->job_id || !job->user_id || !job->status)
        return -1;
    doc = sched_job_json(job);
    out->doc = nf_json_print(doc);
    cJSON_Delete(doc);
    out->job_id = nf_xstrdup(job->job_id);
    out->user_id = nf_xstrdup(job->user_id);
    out->status = nf_xstrdup(job->status);
    out->version = int_or(job->version, 0);
    return 0;
}

void sched_snap_clear(struct sched_snap *s)
{
    if (!s)
        return;
    free(s->job_id);
    free(s->user_id);
    free(s->status);
    free(s->doc);
    memset(s, 0, sizeof(*s));
}
