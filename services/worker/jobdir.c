/*
 * Job directories: one private directory per attempt, gone when the attempt ends.
 *
 *   <work dir>/                      0700 (made so at start)
 *       <job_id>-<attempt>/          0700   created at start of the attempt
 *           inputs/<param>/<name>    0700   the inputs, fetched before the handler runs
 *           out/                     0700   NF_ARTIFACT_DIR: the handler's cwd
 *
 * Removed once the attempt is reported (whatever its outcome), except the directory of a
 * deploy job whose endpoint still runs from it: that one is kept (wk_jobdir_keep) and
 * removed once out/endpoint.pid no longer names a live process, or when the agent exits.
 *
 * Other users cannot look inside (0700); handlers run as the agent's user, so the privacy
 * between jobs on one host is that of processes of one user.
 */
#define _GNU_SOURCE /* nftw */
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nf_log.h"
#include "wk.h"

#define KEEP_CHECK_S 2 /* how often kept deploy directories are checked */

struct wk_kept {
    struct wk_kept *next;
    char dir[PATH_MAX];
};

int wk_root_prepare(const char *path, char *abs, size_t len)
{
    char buf[PATH_MAX], real[PATH_MAX];
    size_t n = strlen(path);
    struct stat st;

    if (n == 0 || n >= sizeof(buf))
        return -1;
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) { /* mkdir -p: the parents 0755, the last 0700 */
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char saved = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, saved == '\0' ? 0700 : 0755) < 0 && errno != EEXIST)
            return -1;
        buf[i] = saved;
    }
    if (lstat(path, &st) < 0)
        return -1;
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    if ((st.st_mode & 07777) != 0700 && chmod(path, 0700) < 0)
        return -1;
    if (realpath(path, real) == NULL)
        return -1;
    if (strlen(real) >= len) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(abs, real, strlen(real) + 1);
    return 0;
}

static int rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    int rc = type == FTW_DP ? rmdir(path) : unlink(path);
    return rc < 0 && errno != ENOENT ? -1 : 0;
}

int wk_rmtree(const char *path)
{
    struct stat st;

    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : -1;
    /* FTW_PHYS: never follow a symlink a handler left; FTW_MOUNT: stay on this file system */
    return nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

int wk_jobdir_create(const char *root, const char *job_id, long long attempt, char *dir, size_t len)
{
    char sub[PATH_MAX + 16];
    int n = snprintf(dir, len, "%s/%s-%lld", root, job_id, attempt);

    if (n < 0 || (size_t)n >= len || (size_t)n >= PATH_MAX) {
        dir[0] = '\0';
        errno = ENAMETOOLONG;
        return -1;
    }
    /* left by an agent that died: nothing of it may leak into this attempt */
    if (wk_rmtree(dir) < 0 || mkdir(dir, 0700) < 0)
        goto fail;
    snprintf(sub, sizeof(sub), "%s/inputs", dir);
    if (mkdir(sub, 0700) < 0)
        goto fail;
    snprintf(sub, sizeof(sub), "%s/out", dir);
    if (mkdir(sub, 0700) < 0)
        goto fail;
    return 0;
fail : {
    int e = errno;
    wk_rmtree(dir);
    dir[0] = '\0';
    errno = e;
    return -1;
}
}

/* ---- kept deploy directories -------------------------------------------------------------- */

bool wk_endpoint_alive(const char *dir)
{
    char path[PATH_MAX + 32], text[32] = "";
    snprintf(path, sizeof(path), "%s/out/endpoint.pid", dir);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return false;
    bool ok = fgets(text, sizeof(text), f) != NULL;
    fclose(f);
    char *end = NULL;
    long pid = ok ? strtol(text, &end, 10) : 0;
    if (pid <= 1 || end == text || (*end != '\n' && *end != '\0'))
        return false;
    if (kill((pid_t)pid, 0) < 0 && errno != EPERM)
        return false;
    /* a zombie (killed, not yet reaped by whoever inherited it) has stopped serving */
    char stat[512] = "";
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    f = fopen(path, "re");
    if (f == NULL)
        return true; /* no /proc: trust kill() */
    size_t n = fread(stat, 1, sizeof(stat) - 1, f);
    fclose(f);
    stat[n] = '\0';
    const char *paren = strrchr(stat, ')');
    return paren == NULL || (paren[1] != '\0' && paren[2] != 'Z' && paren[2] != 'X');
}

static void remove_dir(const char *dir)
{
    if (wk_rmtree(dir) < 0)
        nf_log_kv(NF_LOG_WARN, "job_dir_remove_failed", strerror(errno), "path", dir, NULL);
}

static void on_keep_check(evutil_socket_t fd, short what, void *arg)
{
    struct wk_ctx *ctx = arg;
    struct wk_kept **link = &ctx->kept;
    while (*link != NULL) {
        struct wk_kept *k = *link;
        if (wk_endpoint_alive(k->dir)) {
            link = &k->next;
            continue;
        }
        nf_log_kv(NF_LOG_INFO, "job_dir_released", "deploy endpoint stopped: directory removed",
                  "path", k->dir, NULL);
        remove_dir(k->dir);
        *link = k->next;
        free(k);
    }
    if (ctx->kept == NULL)
        wk_event_free(&ctx->keep_ev);
}

void wk_jobdir_keep(struct wk_ctx *ctx, const char *dir)
{
    struct wk_kept *k = nf_xcalloc(1, sizeof(*k));
    snprintf(k->dir, sizeof(k->dir), "%s", dir);
    k->next = ctx->kept;
    ctx->kept = k;
    if (ctx->keep_ev == NULL) {
        struct timeval tv = {KEEP_CHECK_S, 0};
        ctx->keep_ev = event_new(ctx->base, -1, EV_PERSIST, on_keep_check, ctx);
        if (ctx->keep_ev == NULL || event_add(ctx->keep_ev, &tv) < 0)
            abort();
    }
}

void wk_jobdir_free_all(struct wk_ctx *ctx)
{
    wk_event_free(&ctx->keep_ev);
    while (ctx->kept != NULL) {
        struct wk_kept *k = ctx->kept;
        ctx->kept = k->next;
        remove_dir(k->dir);
        free(k);
    }
}
