/*
 * The structural check of an uploaded Hugging Face model directory (model_check.h). Pure.
 * The upload is hostile input: every length is bounded before anything is allocated or
 * parsed, every arithmetic on its numbers is overflow-checked.
 */
#include "model_check.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_json.h"

#define DIM_MAX ((uint64_t)1 << 40) /* one dimension of a tensor */
#define RANK_MAX 8

/* The causal-LM model types transformers loads with AutoModelForCausalLM. */
static const char *const model_types[] = {
    "llama", "mistral", "mixtral",     "qwen2",  "qwen2_moe", "qwen3",       "qwen3_moe",
    "gemma", "gemma2",  "gemma3_text", "phi",    "phi3",      "gpt2",        "gpt_neox",
    "gptj",  "gpt_neo", "gpt_bigcode", "falcon", "opt",       "bloom",       "starcoder2",
    "olmo",  "olmo2",   "stablelm",    "cohere", "granite",   "deepseek_v2", "deepseek_v3",
    "mpt",   "codegen", "smollm3",     "exaone", "nemotron",  "persimmon",   NULL};

static const struct {
    const char *name;
    unsigned bytes;
} dtypes[] = {{"F64", 8},  {"F32", 4},     {"F16", 2},     {"BF16", 2}, {"I64", 8}, {"I32", 4},
              {"I16", 2},  {"I8", 1},      {"U64", 8},     {"U32", 4},  {"U16", 2}, {"U8", 1},
              {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}, {NULL, 0}};

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

void gw_mc_init(struct gw_mc *mc)
{
    memset(mc, 0, sizeof(*mc));
}

/* ---- tar ----------------------------------------------------------------------------- */

/* An octal field (NUL/space padded) or GNU base-256 (high bit of the first byte). */
static int tar_number(const unsigned char *f, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    size_t i = 0;

    if (f[0] & 0x80) {
        if (f[0] != 0x80) /* negative or over 2^56: no sane size */
            return -1;
        for (i = 1; i < n; i++) {
            if (v > (UINT64_MAX >> 8))
                return -1;
            v = (v << 8) | f[i];
        }
        *out = v;
        return 0;
    }
    while (i < n && f[i] == ' ')
        i++;
    for (; i < n && f[i] >= '0' && f[i] <= '7'; i++) {
        if (v > (UINT64_MAX >> 3))
            return -1;
        v = (v << 3) | (uint64_t)(f[i] - '0');
    }
    for (; i < n; i++)
        if (f[i] != ' ' && f[i] != '\0')
            return -1;
    *out = v;
    return 0;
}

static size_t field_len(const unsigned char *f, size_t n)
{
    const unsigned char *z = memchr(f, 0, n);

    return z ? (size_t)(z - f) : n;
}

int gw_mc_tar_header(const unsigned char *blk, struct gw_mc_tar_hdr *h, char *err, size_t errlen)
{
    uint64_t sum = 0, want;
    size_t i, nl, pl = 0;
    bool ustar;

    for (i = 0; i < 512 && blk[i] == 0; i++)
        ;
    if (i == 512)
        return 0;
    for (i = 0; i < 512; i++)
        sum += (i >= 148 && i < 156) ? ' ' : blk[i];
    if (tar_number(blk + 148, 8, &want) < 0 || want != sum)
        return fail(err, errlen,
                    "the upload is not a tar archive (a header's checksum is "
                    "wrong): upload the model directory as an uncompressed tar");
    if (tar_number(blk + 124, 12, &h->size) < 0)
        return fail(err, errlen, "the tar archive has a malformed size field");
    h->type = (char)blk[156];
    ustar = memcmp(blk + 257, "ustar\0", 6) == 0; /* POSIX; GNU's "ustar  " has no prefix */
    nl = field_len(blk, 100);
    if (ustar)
        pl = field_len(blk + 345, 155);
    if (pl > 0) {
        memcpy(h->name, blk + 345, pl);
        h->name[pl] = '/';
        memcpy(h->name + pl + 1, blk, nl);
        h->name[pl + 1 + nl] = '\0';
    } else {
        memcpy(h->name, blk, nl);
        h->name[nl] = '\0';
    }
    return 1;
}

int gw_mc_pax_path(const char *data, size_t len, char *path, size_t pathlen, char *err,
                   size_t errlen)
{
    size_t off = 0;
    int found = 0;

    /* records: "<len> <key>=<value>\n", len counting the whole record */
    while (off < len) {
        size_t rl = 0, i = off, sp;
        const char *rec = data + off, *eq;

        while (i < len && data[i] >= '0' && data[i] <= '9' && i - off < 9)
            rl = rl * 10 + (size_t)(data[i++] - '0');
        if (i >= len || data[i] != ' ' || rl == 0 || rl > len - off || data[off + rl - 1] != '\n')
            return fail(err, errlen, "the tar archive has a malformed pax header");
        sp = i + 1 - off;
        eq = memchr(rec + sp, '=', rl - sp);
        if (!eq)
            return fail(err, errlen, "the tar archive has a malformed pax header");
        if ((size_t)(eq - rec) - sp == 4 && memcmp(rec + sp, "path", 4) == 0) {
            size_t vl = rl - (size_t)(eq + 1 - rec) - 1;
            if (vl >= pathlen || memchr(eq + 1, 0, vl))
                return fail(err, errlen, "a tar member's name is too long (over %zu bytes)",
                            pathlen - 1);
            memcpy(path, eq + 1, vl);
            path[vl] = '\0';
            found = 1;
        }
        off += rl;
    }
    return found;
}

int gw_mc_member(const char *name, char type, char *out, size_t outlen, char *err, size_t errlen)
{
    const char *p = name, *seg;
    size_t n;

    if (type == 'g' || type == 'x' || type == 'L' || type == 'K')
        return 0; /* metadata of the archive or of the next member */
    if (type == '1' || type == '2')
        return fail(err, errlen, "%.200s: links are not accepted in a model upload", name);
    if (type != '0' && type != '\0' && type != '7' && type != '5')
        return fail(err, errlen,
                    "%.200s: only files and directories are accepted in a model "
                    "upload (tar type '%c')",
                    name, type);
    for (seg = name; *seg; seg++)
        if ((unsigned char)*seg < 0x20 || *seg == 0x7f || *seg == '\\')
            return fail(err, errlen, "a tar member's name has a control byte or a backslash");
    if (name[0] == '/')
        return fail(err, errlen, "%.200s: absolute paths are not accepted", name);
    for (seg = name; seg; seg = strchr(seg, '/') ? strchr(seg, '/') + 1 : NULL)
        if (strncmp(seg, "..", 2) == 0 && (seg[2] == '/' || seg[2] == '\0'))
            return fail(err, errlen, "%.200s: '..' is not accepted in a member's name", name);
    while (p[0] == '.' && p[1] == '/')
        for (p += 2; *p == '/';)
            p++;
    if (type == '5' || p[0] == '\0' || strcmp(p, ".") == 0)
        return 0;
    n = strlen(p);
    if (strchr(p, '/'))
        return 0; /* a file in a subdirectory: not part of what transformers loads here */
    if (n >= outlen)
        return fail(err, errlen, "a file name is too long");
    memcpy(out, p, n + 1);
    return 1;
}

int gw_mc_add(struct gw_mc *mc, const char *name, uint64_t offset, uint64_t size, char *err,
              size_t errlen)
{
    struct gw_mc_file *f;

    if (gw_mc_find(mc, name))
        return fail(err, errlen, "%s is in the tar twice", name);
    if (mc->nfiles >= GW_MC_MAX_FILES)
        return fail(err, errlen, "the model directory has more than %d files", GW_MC_MAX_FILES);
    f = &mc->files[mc->nfiles++];
    snprintf(f->name, sizeof(f->name), "%s", name);
    f->offset = offset;
    f->size = size;
    return 0;
}

const struct gw_mc_file *gw_mc_find(const struct gw_mc *mc, const char *name)
{
    size_t i;

    for (i = 0; i < mc->nfiles; i++)
        if (strcmp(mc->files[i].name, name) == 0)
            return &mc->files[i];
    return NULL;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);

    return n >= m && strcmp(s + n - m, suffix) == 0;
}

bool gw_mc_is_safetensors(const char *name)
{
    return ends_with(name, ".safetensors");
}

/* ---- config.json --------------------------------------------------------------------- */

/* A positive integer field, 0 when absent; -1 when present and not one. */
static int64_t pos_int(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

    if (!v || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble > 1e12 ||
        v->valuedouble != (double)(int64_t)v->valuedouble)
        return -1;
    return (int64_t)v->valuedouble;
}

int gw_mc_config(struct gw_mc *mc, const char *buf, size_t len, char *err, size_t errlen)
{
    cJSON *doc = nf_json_parse(buf, len);
    const cJSON *mt, *arch, *a;
    const char *hidden_keys[] = {"hidden_size", "n_embd", "d_model", NULL};
    int rc = -1, i;

    if (!cJSON_IsObject(doc)) {
        fail(err, errlen, "config.json is not a JSON object");
        goto out;
    }
    mt = cJSON_GetObjectItemCaseSensitive(doc, "model_type");
    if (!cJSON_IsString(mt) || !mt->valuestring[0]) {
        fail(err, errlen, "config.json has no model_type");
        goto out;
    }
    for (i = 0; model_types[i] && strcmp(model_types[i], mt->valuestring) != 0; i++)
        ;
    if (!model_types[i]) {
        fail(err, errlen,
             "config.json: model_type %.48s is not a causal language model "
             "architecture this platform loads",
             mt->valuestring);
        goto out;
    }
    arch = cJSON_GetObjectItemCaseSensitive(doc, "architectures");
    if (arch && !cJSON_IsNull(arch)) {
        if (!cJSON_IsArray(arch) || cJSON_GetArraySize(arch) < 1) {
            fail(err, errlen, "config.json: architectures must be a list of class names");
            goto out;
        }
        cJSON_ArrayForEach(a, arch)
        {
            if (!cJSON_IsString(a) || !a->valuestring[0]) {
                fail(err, errlen, "config.json: architectures must be a list of class names");
                goto out;
            }
        }
    }
    mc->vocab_size = pos_int(doc, "vocab_size");
    if (mc->vocab_size < 0) {
        fail(err, errlen, "config.json: vocab_size must be a positive integer");
        goto out;
    }
    for (i = 0; hidden_keys[i]; i++) {
        mc->hidden_size = pos_int(doc, hidden_keys[i]);
        if (mc->hidden_size < 0) {
            fail(err, errlen, "config.json: %s must be a positive integer", hidden_keys[i]);
            goto out;
        }
        if (mc->hidden_size > 0)
            break;
    }
    snprintf(mc->model_type, sizeof(mc->model_type), "%s", mt->valuestring);
    mc->config = true;
    rc = 0;
out:
    cJSON_Delete(doc);
    return rc;
}

/* ---- safetensors --------------------------------------------------------------------- */

int gw_mc_st_header_len(const char *file, const unsigned char *first8, uint64_t file_size,
                        uint64_t *header_len, char *err, size_t errlen)
{
    uint64_t n = 0;
    int i;

    if (file_size < 10)
        return fail(err, errlen, "%s is too short to be a safetensors file", file);
    for (i = 7; i >= 0; i--)
        n = (n << 8) | first8[i];
    if (n < 2 || n > GW_MC_ST_HEADER_MAX)
        return fail(err, errlen, "%s: its header length (%llu bytes) is not in 2..%zu", file,
                    (unsigned long long)n, GW_MC_ST_HEADER_MAX);
    if (n > file_size - 8)
        return fail(err, errlen, "%s: its header length (%llu bytes) runs past the file", file,
                    (unsigned long long)n);
    *header_len = n;
    return 0;
}

struct span {
    uint64_t begin, end;
};

static int span_cmp(const void *a, const void *b)
{
    const struct span *x = a, *y = b;

    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/* One tensor's entry; its byte span into sp and its element count into numel. */
static int tensor(struct gw_mc *mc, const char *file, const cJSON *t, struct span *sp,
                  uint64_t *numel, uint64_t data_bytes, char *err, size_t errlen)
{
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(t, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(t, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(t, "data_offsets");
    const cJSON *d, *b, *e;
    uint64_t n = 1, dims[RANK_MAX], bytes;
    int i, rank = 0;

    if (!cJSON_IsObject(t))
        return fail(err, errlen, "%s: tensor %.100s is not an object", file, t->string);
    for (i = 0; cJSON_IsString(dt) && dtypes[i].name; i++)
        if (strcmp(dtypes[i].name, dt->valuestring) == 0)
            break;
    if (!cJSON_IsString(dt) || !dtypes[i].name)
        return fail(err, errlen, "%s: tensor %.100s has an unknown dtype", file, t->string);
    if (!cJSON_IsArray(shape) || cJSON_GetArraySize(shape) > RANK_MAX)
        return fail(err, errlen, "%s: tensor %.100s: shape must be a list of up to %d sizes", file,
                    t->string, RANK_MAX);
    cJSON_ArrayForEach(d, shape)
    {
        if (!cJSON_IsNumber(d) || d->valuedouble < 0 || d->valuedouble > (double)DIM_MAX ||
            d->valuedouble != (double)(uint64_t)d->valuedouble)
            return fail(err, errlen, "%s: tensor %.100s has a bad shape", file, t->string);
        dims[rank++] = (uint64_t)d->valuedouble;
        if (__builtin_mul_overflow(n, dims[rank - 1], &n))
            return fail(err, errlen, "%s: tensor %.100s is impossibly large", file, t->string);
    }
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 ||
        !cJSON_IsNumber(b = cJSON_GetArrayItem(offs, 0)) ||
        !cJSON_IsNumber(e = cJSON_GetArrayItem(offs, 1)) || b->valuedouble < 0 ||
        e->valuedouble < b->valuedouble || e->valuedouble > (double)data_bytes)
        return fail(err, errlen, "%s: tensor %.100s: data_offsets are out of the file's range",
                    file, t->string);
    sp->begin = (uint64_t)b->valuedouble;
    sp->end = (uint64_t)e->valuedouble;
    if (__builtin_mul_overflow(n, (uint64_t)dtypes[i].bytes, &bytes) ||
        bytes != sp->end - sp->begin)
        return fail(err, errlen,
                    "%s: tensor %.100s: %s of that shape takes %llu bytes, its data_offsets "
                    "span %llu",
                    file, t->string, dtypes[i].name, (unsigned long long)bytes,
                    (unsigned long long)(sp->end - sp->begin));
    if (rank == 2 && mc->vocab_size > 0 && mc->hidden_size > 0 &&
        dims[0] == (uint64_t)mc->vocab_size && dims[1] == (uint64_t)mc->hidden_size)
        mc->embedding = true;
    *numel = n;
    return 0;
}

int gw_mc_safetensors(struct gw_mc *mc, const char *file, const char *hdr, size_t len,
                      uint64_t data_bytes, char *err, size_t errlen)
{
    cJSON *doc;
    const cJSON *t, *v;
    struct span *spans = NULL;
    uint64_t params = 0, numel = 0, at = 0;
    size_t n = 0, i, count;
    int rc = -1;

    if (len < 2 || hdr[0] != '{')
        return fail(err, errlen, "%s: its header is not a JSON object", file);
    doc = nf_json_parse(hdr, len);
    if (!cJSON_IsObject(doc)) {
        fail(err, errlen, "%s: its header is not a JSON object", file);
        goto out;
    }
    count = (size_t)cJSON_GetArraySize(doc);
    if (count > GW_MC_MAX_TENSORS + 1) {
        fail(err, errlen, "%s: more than %d tensors", file, GW_MC_MAX_TENSORS);
        goto out;
    }
    spans = calloc(count ? count : 1, sizeof(*spans));
    if (!spans)
        abort();
    cJSON_ArrayForEach(t, doc)
    {
        if (strcmp(t->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(t)) {
                fail(err, errlen, "%s: __metadata__ must be an object of strings", file);
                goto out;
            }
            cJSON_ArrayForEach(v, t)
            {
                if (!cJSON_IsString(v)) {
                    fail(err, errlen, "%s: __metadata__ must be an object of strings", file);
                    goto out;
                }
            }
            continue;
        }
        if (tensor(mc, file, t, &spans[n], &numel, data_bytes, err, errlen) < 0)
            goto out;
        if (__builtin_add_overflow(params, numel, &params)) {
            fail(err, errlen, "%s: impossibly many parameters", file);
            goto out;
        }
        n++;
    }
    /* the loader refuses holes and overlaps: the tensors tile the data exactly */
    qsort(spans, n, sizeof(*spans), span_cmp);
    for (i = 0; i < n; i++) {
        if (spans[i].begin != at) {
            fail(err, errlen, "%s: tensors %s at byte %llu of the data", file,
                 spans[i].begin < at ? "overlap" : "leave a hole",
                 (unsigned long long)(spans[i].begin < at ? spans[i].begin : at));
            goto out;
        }
        at = spans[i].end;
    }
    if (at != data_bytes) {
        fail(err, errlen, "%s: its tensors take %llu bytes, the file holds %llu after the header",
             file, (unsigned long long)at, (unsigned long long)data_bytes);
        goto out;
    }
    if (__builtin_add_overflow(mc->params, params, &mc->params)) {
        fail(err, errlen, "impossibly many parameters");
        goto out;
    }
    mc->tensors += n;
    mc->st_files++;
    rc = 0;
out:
    free(spans);
    cJSON_Delete(doc);
    return rc;
}

int gw_mc_index(struct gw_mc *mc, const char *buf, size_t len, char *err, size_t errlen)
{
    static const char name[] = "model.safetensors.index.json";
    cJSON *doc = nf_json_parse(buf, len);
    const cJSON *map, *e;
    uint64_t n = 0;
    int rc = -1;

    map = cJSON_GetObjectItemCaseSensitive(doc, "weight_map");
    if (!cJSON_IsObject(doc) || !cJSON_IsObject(map)) {
        fail(err, errlen, "%s has no weight_map object", name);
        goto out;
    }
    cJSON_ArrayForEach(e, map)
    {
        if (!cJSON_IsString(e) || !gw_mc_is_safetensors(e->valuestring) ||
            !gw_mc_find(mc, e->valuestring)) {
            fail(err, errlen,
                 "%s maps %.100s to %.100s, which is not a safetensors file of "
                 "the upload",
                 name, e->string, cJSON_IsString(e) ? e->valuestring : "a non-string");
            goto out;
        }
        n++;
    }
    mc->index = true;
    mc->index_map = n;
    rc = 0;
out:
    cJSON_Delete(doc);
    return rc;
}

/* ---- the whole directory ------------------------------------------------------------- */

static bool nonempty(const struct gw_mc *mc, const char *name)
{
    const struct gw_mc_file *f = gw_mc_find(mc, name);

    return f && f->size > 0;
}

int gw_mc_finish(const struct gw_mc *mc, char *err, size_t errlen)
{
    static const char *const pickles[] = {".bin", ".pt", ".pth", ".pkl", ".ckpt", NULL};
    size_t i, j;

    if (!gw_mc_find(mc, "config.json"))
        return fail(err, errlen,
                    "config.json is missing at the top of the tar (pack the "
                    "directory's contents: tar -C DIR -cf model.tar .)");
    if (!mc->config)
        return fail(err, errlen, "config.json was not checked");
    if (!(nonempty(mc, "tokenizer.json") || nonempty(mc, "tokenizer.model") ||
          (nonempty(mc, "vocab.json") && nonempty(mc, "merges.txt")) || nonempty(mc, "vocab.txt")))
        return fail(err, errlen,
                    "no tokenizer: the directory needs tokenizer.json, "
                    "tokenizer.model, vocab.json with merges.txt, or vocab.txt");
    if (mc->st_files == 0) {
        for (i = 0; i < mc->nfiles; i++)
            for (j = 0; pickles[j]; j++)
                if (ends_with(mc->files[i].name, pickles[j]))
                    return fail(err, errlen,
                                "%s: pickled weights are not accepted (loading "
                                "them can run code); save the model with "
                                "safe_serialization (model.safetensors)",
                                mc->files[i].name);
        return fail(err, errlen, "no weights: the directory has no .safetensors file");
    }
    if (mc->index && mc->index_map != mc->tensors)
        return fail(err, errlen,
                    "model.safetensors.index.json maps %llu tensors, the "
                    "safetensors files hold %llu",
                    (unsigned long long)mc->index_map, (unsigned long long)mc->tensors);
    if (mc->params == 0)
        return fail(err, errlen, "the safetensors files hold no parameters");
    if (mc->vocab_size > 0 && mc->hidden_size > 0 && !mc->embedding)
        return fail(err, errlen,
                    "no tensor of shape [%lld, %lld] (config.json's vocab_size, "
                    "hidden size): the weights do not fit the config",
                    (long long)mc->vocab_size, (long long)mc->hidden_size);
    return 0;
}
