/*
 * The worker's GPUs: which the agent has (detected with nvidia-smi when the operator named
 * no type, or NF_WORKER_GPU_TYPE / NF_WORKER_GPU_COUNT), and which a job gets: each job is
 * pinned to its own GPUs through CUDA_VISIBLE_DEVICES, so two jobs on one worker never
 * share a device unless the worker runs more GPU jobs than it has GPUs (then the least
 * busy are shared, and the log says so).
 *
 *   start --> wk_gpus_detect (nvidia-smi --query-gpu=name,memory.total) --> type, count
 *   job   --> wk_gpus_take (lowest free ids; the agent's own CUDA_VISIBLE_DEVICES, when
 *             set, lists the devices it may use) --> "2,3" --> the handler's environment
 *   end   --> wk_gpus_give
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "job.h"
#include "nf_log.h"
#include "wk.h"

#define SMI_QUERY                                                                                  \
    "nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits 2>/dev/null"

/* The short type name schedulers and users write (h100, a100, l4, ...) from a product
 * name such as "NVIDIA H100 80GB HBM3" or "NVIDIA A100-SXM4-40GB": the first word (words
 * split at blanks and '-') with a digit that is not a memory size or a memory kind,
 * lowercased; "" when none. */
void wk_gpu_type_of(const char *product, char *out, size_t len)
{
    char word[64];
    const char *p = product;

    out[0] = '\0';
    while (p && *p) {
        size_t n = 0;
        while (*p && (isspace((unsigned char)*p) || *p == '-'))
            p++;
        while (p[n] && !isspace((unsigned char)p[n]) && p[n] != '-')
            n++;
        if (n > 0 && n < sizeof(word)) {
            bool digit = false, mem = n > 2 && (strncasecmp(p + n - 2, "GB", 2) == 0);
            for (size_t i = 0; i < n; i++) {
                word[i] = (char)tolower((unsigned char)p[i]);
                digit |= isdigit((unsigned char)p[i]) != 0;
            }
            word[n] = '\0';
            if (digit && !mem && strncmp(word, "hbm", 3) != 0 && strncmp(word, "gddr", 4) != 0) {
                snprintf(out, len, "%s", word);
                return;
            }
        }
        p += n;
    }
}

int wk_gpus_parse_smi(const char *text, char *type, size_t type_len, int *count,
                      long long *memory_mib)
{
    int n = 0;
    const char *line = text;

    type[0] = '\0';
    *memory_mib = 0;
    while (line && *line) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char buf[256];
        if (len > 0 && len < sizeof(buf)) {
            memcpy(buf, line, len);
            buf[len] = '\0';
            char *comma = strchr(buf, ',');
            if (comma != NULL) {
                *comma = '\0';
                if (n == 0) {
                    wk_gpu_type_of(buf, type, type_len);
                    *memory_mib = strtoll(comma + 1, NULL, 10);
                }
                n++;
            }
        }
        line = end ? end + 1 : NULL;
    }
    *count = n;
    return n > 0 && type[0] ? 0 : -1;
}

void wk_gpus_detect(struct wk_ctx *ctx)
{
    char text[4096], type[32];
    size_t used = 0;
    int count = 0;
    long long mib = 0;

    if (ctx->cfg->gpu_type[0] != '\0')
        return;                      /* the operator said what the worker has */
    FILE *f = popen(SMI_QUERY, "r"); /* NOLINT(cert-env33-c): a fixed command line */
    if (f == NULL)
        return;
    while (used < sizeof(text) - 1) {
        size_t r = fread(text + used, 1, sizeof(text) - 1 - used, f);
        if (r == 0)
            break;
        used += r;
    }
    text[used] = '\0';
    if (pclose(f) != 0 || wk_gpus_parse_smi(text, type, sizeof(type), &count, &mib) < 0)
        return;
    snprintf(ctx->gpu_type, sizeof(ctx->gpu_type), "%s", type);
    ctx->gpu_count = count;
    ctx->gpu_memory_mib = mib;
    char n[16], m[24];
    snprintf(n, sizeof(n), "%d", count);
    snprintf(m, sizeof(m), "%lld", mib);
    nf_log_kv(NF_LOG_INFO, "gpus_detected", "GPUs found with nvidia-smi", "gpu_type", type,
              "gpu_count", n, "memory_mib", m, NULL);
}

int wk_gpus_devices(const char *visible, int count, int *ids, int max)
{
    int n = 0;

    if (visible == NULL || visible[0] == '\0') {
        for (; n < count && n < max; n++)
            ids[n] = n;
        return n;
    }
    for (const char *p = visible; *p && n < max;) {
        char *end = NULL;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > 1023)
            return -1; /* a UUID list or garbage: not ours to renumber */
        ids[n++] = (int)v;
        p = *end == ',' ? end + 1 : end;
        if (*end != ',' && *end != '\0')
            return -1;
    }
    return n;
}

uint64_t wk_gpus_pick(uint64_t busy, const int *devices, int ndev, int want, char *out, size_t len)
{
    uint64_t mask = 0;
    size_t off = 0;
    int got = 0;

    out[0] = '\0';
    if (ndev > 64)
        ndev = 64;
    /* free ones first, lowest index first; then, oversubscribed, the busy ones */
    for (int pass = 0; pass < 2 && got < want; pass++) {
        for (int i = 0; i < ndev && got < want; i++) {
            uint64_t bit = (uint64_t)1 << i;
            if ((mask & bit) || (pass == 0 && (busy & bit)))
                continue;
            mask |= bit;
            got++;
        }
    }
    for (int i = 0; i < ndev; i++) {
        if (!(mask & ((uint64_t)1 << i)) || off >= len)
            continue;
        int w = snprintf(out + off, len - off, "%s%d", off ? "," : "", devices[i]);
        off += w > 0 ? (size_t)w : 0;
    }
    return mask;
}

uint64_t wk_gpus_busy(const struct wk_ctx *ctx)
{
    uint64_t busy = 0;
    for (int i = 0; i < ctx->ngpu_devices && i < 64; i++)
        if (ctx->gpu_refs[i] > 0)
            busy |= (uint64_t)1 << i;
    return busy;
}

void wk_gpus_take(struct wk_job *job)
{
    struct wk_ctx *ctx = job->ctx;
    uint64_t busy = wk_gpus_busy(ctx);

    job->gpus[0] = '\0';
    job->gpu_mask = 0;
    if (ctx->ngpu_devices <= 0 || job->gpu_count <= 0)
        return;
    job->gpu_mask = wk_gpus_pick(busy, ctx->gpu_devices, ctx->ngpu_devices, job->gpu_count,
                                 job->gpus, sizeof(job->gpus));
    for (int i = 0; i < ctx->ngpu_devices && i < 64; i++)
        if (job->gpu_mask & ((uint64_t)1 << i))
            ctx->gpu_refs[i]++;
    if (job->gpu_mask & busy)
        nf_log_kv(NF_LOG_WARN, "gpus_shared",
                  "more GPU jobs than GPUs: this job shares a device with another", "job_id",
                  job->job_id, "gpus", job->gpus, NULL);
}

void wk_gpus_give(struct wk_job *job)
{
    struct wk_ctx *ctx = job->ctx;
    for (int i = 0; i < ctx->ngpu_devices && i < 64; i++)
        if ((job->gpu_mask & ((uint64_t)1 << i)) && ctx->gpu_refs[i] > 0)
            ctx->gpu_refs[i]--;
    job->gpu_mask = 0;
}
