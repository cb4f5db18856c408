/*
 * The blocking transfers of a job, run in a child process of the agent (never on its
 * event loop): inputs from the object store into the job directory before the handler
 * starts, the handler's artifacts into the store after it exited 0.
 *
 *   wk_stage_in:  for each input: mkdir inputs/<param> (0700) --> nf_s3_download_file
 *                 (the job's total bounded by max_bytes) --> {"log"} line on log_fd
 *   wk_stage_out: open the artifact below out/ without following any symlink
 *                 (wk_artifact_open) --> size + SHA-256 from that descriptor -->
 *                 nf_s3_upload_file of the same descriptor (/proc/self/fd/N)
 *
 * Uploading from the descriptor that was checked, not from the path, means a process the
 * handler left behind cannot swap the file for a symlink to a secret between the check
 * and the upload.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "wk.h"

static void set_err(struct wk_stage_err *err, const char *klass, const char *code, const char *fmt,
                    ...) __attribute__((format(printf, 4, 5)));

static void set_err(struct wk_stage_err *err, const char *klass, const char *code, const char *fmt,
                    ...)
{
    va_list ap;
    snprintf(err->klass, sizeof(err->klass), "%s", klass);
    snprintf(err->code, sizeof(err->code), "%s", code);
    va_start(ap, fmt);
    /* NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): false positive, ap is started */
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
}

void wk_write_all(int fd, const char *buf, size_t len)
{
    while (fd >= 0 && len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        buf += n;
        len -= (size_t)n;
    }
}

/* What the message names the input by: the user's URI when the dispatch gave it. */
static const char *input_label(const struct wk_input *in)
{
    return in->uri && in->uri[0] ? in->uri : in->name;
}

int wk_stage_in(const struct nf_s3_conf *conf, const struct wk_inputs *in, const char *inputs_dir,
                long long max_bytes, int log_fd, struct wk_stage_err *err)
{
    char path[4096], msg[512], reason[256];
    long long used = 0;
    struct stat st;

    for (int i = 0; i < in->n; i++) {
        const struct wk_input *x = &in->v[i];
        int n = snprintf(path, sizeof(path), "%s/%s", inputs_dir, x->param);
        if (n < 0 || (size_t)n >= sizeof(path) || (mkdir(path, 0700) < 0 && errno != EEXIST) ||
            wk_input_path(inputs_dir, x, path, sizeof(path)) < 0) {
            set_err(err, "infra", "input_fetch", "input %s: cannot create its directory: %s",
                    x->param, strerror(errno));
            return -1;
        }
        if (used >= max_bytes) {
            set_err(err, "user_error", "input_too_large",
                    "input %s: the job's inputs exceed the worker's limit of %lld bytes", x->param,
                    max_bytes);
            return -1;
        }
        reason[0] = '\0';
        int rc = nf_s3_download_file(conf, x->object_key, path, max_bytes - used, reason,
                                     sizeof(reason));
        if (rc == -ENOENT) {
            set_err(err, "user_error", "input_missing", "input %s: no such object %s", x->param,
                    input_label(x));
            return -1;
        }
        if (rc == -EFBIG) {
            set_err(err, "user_error", "input_too_large",
                    "input %s: %s is larger than the worker's limit of %lld bytes", x->param,
                    input_label(x), max_bytes);
            return -1;
        }
        if (rc < 0) {
            set_err(err, "infra", "input_fetch", "input %s: cannot fetch %s: %s", x->param,
                    input_label(x), reason[0] ? reason : "object store error");
            return -1;
        }
        if (stat(path, &st) < 0) {
            set_err(err, "infra", "input_fetch", "input %s: downloaded file missing", x->param);
            return -1;
        }
        used += (long long)st.st_size;
        /* param is [a-z0-9_]: safe inside a JSON string as is */
        n = snprintf(msg, sizeof(msg), "{\"log\": \"input %s fetched (%lld bytes)\"}\n", x->param,
                     (long long)st.st_size);
        if (n > 0 && (size_t)n < sizeof(msg))
            wk_write_all(log_fd, msg, (size_t)n);
    }
    return 0;
}

int wk_stage_out_one(const struct nf_s3_conf *conf, const char *dir, const char *rel,
                     const char *key, uint64_t *bytes, char sha_hex[NF_SHA256_HEX_LEN + 1],
                     char *err, size_t errlen)
{
    char fdpath[64];
    const char *why = NULL;
    int fd = wk_artifact_open(dir, rel, &why);
    if (fd < 0) {
        snprintf(err, errlen, "artifact %s: %s", rel, why);
        return -1;
    }
    snprintf(fdpath, sizeof(fdpath), "/proc/self/fd/%d", fd);
    if (wk_artifact_digest(fdpath, bytes, sha_hex) < 0) {
        snprintf(err, errlen, "artifact %s: cannot be read: %s", rel, strerror(errno));
        close(fd);
        return -1;
    }
    char reason[256] = "";
    int rc = nf_s3_upload_file(conf, key, fdpath, NULL, reason, sizeof(reason));
    close(fd);
    if (rc < 0) {
        snprintf(err, errlen, "artifact %s: upload failed: %s", rel,
                 reason[0] ? reason : "object store error");
        return -1;
    }
    return 0;
}
