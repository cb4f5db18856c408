/*
 * jobdir.c: the work dir and every job directory are 0700; a stale directory of the same
 * attempt is replaced; removal never follows a symlink out; a kept deploy directory goes
 * once its endpoint is gone.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nf_log.h"
#include "nf_test.h"
#include "wk.h"

static char root[PATH_MAX];

static int setup(void **state)
{
    nf_test_tmpdir(root, sizeof(root), "nf-wk-dir-");
    return 0;
}

static int teardown(void **state)
{
    return nf_test_rmtree(root);
}

static unsigned mode_of(const char *path)
{
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    return st.st_mode & 07777;
}

static void test_modes(void **state)
{
    char work[PATH_MAX + 32], abs[PATH_MAX], dir[PATH_MAX], p[PATH_MAX + 96];
    snprintf(work, sizeof(work), "%s/a/b/work", root);
    assert_int_equal(wk_root_prepare(work, abs, sizeof(abs)), 0);
    assert_int_equal(mode_of(work), 0700);
    assert_true(abs[0] == '/');
    /* an existing, too open work dir is closed */
    chmod(work, 0755);
    assert_int_equal(wk_root_prepare(work, abs, sizeof(abs)), 0);
    assert_int_equal(mode_of(work), 0700);
    /* a file in the way is an error */
    snprintf(p, sizeof(p), "%s/file", root);
    nf_test_write_file(p, "x", 0644);
    assert_int_equal(wk_root_prepare(p, abs, sizeof(abs)), -1);

    mode_t old = umask(0);
    assert_int_equal(wk_jobdir_create(work, "job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M", 3, dir, sizeof(dir)),
                     0);
    umask(old);
    snprintf(p, sizeof(p), "%s/job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M-3", work);
    assert_string_equal(dir, p);
    assert_int_equal(mode_of(dir), 0700);
    snprintf(p, sizeof(p), "%s/inputs", dir);
    assert_int_equal(mode_of(p), 0700);
    snprintf(p, sizeof(p), "%s/out", dir);
    assert_int_equal(mode_of(p), 0700);

    /* a stale directory of the same attempt (a dead agent's) is replaced, empty */
    snprintf(p, sizeof(p), "%s/out/old.txt", dir);
    nf_test_write_file(p, "old", 0644);
    assert_int_equal(wk_jobdir_create(work, "job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M", 3, dir, sizeof(dir)),
                     0);
    assert_int_equal(access(p, F_OK), -1);

    /* a path that does not fit: an error, and no directory named */
    char tiny[16];
    assert_int_equal(
        wk_jobdir_create(work, "job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M", 1, tiny, sizeof(tiny)), -1);
    assert_string_equal(tiny, "");
}

static void test_rmtree_no_follow(void **state)
{
    char dir[PATH_MAX + 32], outside[PATH_MAX + 32], p[PATH_MAX + 64];
    snprintf(outside, sizeof(outside), "%s/outside", root);
    mkdir(outside, 0755);
    snprintf(p, sizeof(p), "%s/keep.txt", outside);
    nf_test_write_file(p, "keep", 0644);
    snprintf(dir, sizeof(dir), "%s/job", root);
    mkdir(dir, 0700);
    snprintf(p, sizeof(p), "%s/sub", dir);
    mkdir(p, 0500); /* not writable: still removed (we own it) */
    snprintf(p, sizeof(p), "%s/link", dir);
    assert_int_equal(symlink(outside, p), 0);
    snprintf(p, sizeof(p), "%s/f", dir);
    nf_test_write_file(p, "x", 0600);
    assert_int_equal(wk_rmtree(dir), 0);
    assert_int_equal(access(dir, F_OK), -1);
    snprintf(p, sizeof(p), "%s/keep.txt", outside);
    assert_int_equal(access(p, F_OK), 0); /* the symlink's target is untouched */
    assert_int_equal(wk_rmtree(dir), 0);  /* gone already: fine */
}

static void test_keep(void **state)
{
    char work[PATH_MAX + 32], abs[PATH_MAX], live[PATH_MAX], dead[PATH_MAX], p[PATH_MAX + 64];
    struct wk_ctx ctx;
    memset(&ctx, 0, sizeof(ctx));
    ctx.base = event_base_new();
    snprintf(work, sizeof(work), "%s/work", root);
    assert_int_equal(wk_root_prepare(work, abs, sizeof(abs)), 0);
    assert_int_equal(wk_jobdir_create(abs, "job_01JDQ7Z6V1TB6Y4Q4ZKX3R1AAA", 1, live, sizeof(live)),
                     0);
    assert_int_equal(wk_jobdir_create(abs, "job_01JDQ7Z6V1TB6Y4Q4ZKX3R1BBB", 1, dead, sizeof(dead)),
                     0);
    pid_t pid = fork();
    if (pid == 0) {
        pause();
        _exit(0);
    }
    char text[32];
    snprintf(text, sizeof(text), "%d\n", (int)pid);
    snprintf(p, sizeof(p), "%s/out/endpoint.pid", live);
    nf_test_write_file(p, text, 0600);
    wk_jobdir_keep(&ctx, live);
    wk_jobdir_keep(&ctx, dead); /* no endpoint.pid: goes at the first check */
    nf_test_run_for(ctx.base, 2500);
    assert_int_equal(access(dead, F_OK), -1);
    assert_int_equal(access(live, F_OK), 0);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    nf_test_run_for(ctx.base, 2500);
    assert_int_equal(access(live, F_OK), -1);
    assert_null(ctx.kept);
    assert_null(ctx.keep_ev); /* nothing kept: no timer */

    /* the agent exits: every kept directory goes */
    assert_int_equal(wk_jobdir_create(abs, "job_01JDQ7Z6V1TB6Y4Q4ZKX3R1CCC", 1, live, sizeof(live)),
                     0);
    snprintf(text, sizeof(text), "%d\n", (int)getpid());
    snprintf(p, sizeof(p), "%s/out/endpoint.pid", live);
    nf_test_write_file(p, text, 0600);
    wk_jobdir_keep(&ctx, live);
    nf_test_run_for(ctx.base, 2200);
    assert_int_equal(access(live, F_OK), 0); /* alive: kept */
    wk_jobdir_free_all(&ctx);
    assert_int_equal(access(live, F_OK), -1);
    event_base_free(ctx.base);
}

int main(void)
{
    nf_log_init("test", NF_LOG_ERROR);
    return NF_TEST_RUN(setup, teardown, test_modes, test_rmtree_no_follow, test_keep);
}
