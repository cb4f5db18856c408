/*
 * outbox.c: what is written and not done comes back, in order, to the next agent on the
 * same work directory; a torn last record is cut off; a dead agent's journal is taken over
 * while a live one's is left alone; the journal is emptied when nothing is pending,
 * compacted when it outgrows its bound, and refuses (ENOSPC) only when the pending
 * messages alone exceed it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nf_test.h"
#include "outbox.h"

static char root[PATH_MAX];

static int setup(void **state)
{
    nf_test_tmpdir(root, sizeof(root), "nf-wk-outbox-");
    return 0;
}

static int teardown(void **state)
{
    return nf_test_rmtree(root);
}

struct seen {
    int n;
    uint64_t seq[64];
    char key[64][32];
    char payload[64][64];
};

static void collect(uint64_t seq, const char *topic, const char *key, const char *payload,
                    void *arg)
{
    struct seen *s = arg;
    assert_string_equal(topic, "forge.jobs.events");
    s->seq[s->n] = seq;
    snprintf(s->key[s->n], sizeof(s->key[0]), "%s", key);
    snprintf(s->payload[s->n], sizeof(s->payload[0]), "%s", payload);
    s->n++;
}

static off_t file_size(const char *name)
{
    char path[PATH_MAX + 32];
    struct stat st;
    snprintf(path, sizeof(path), "%s/%s", root, name);
    return stat(path, &st) == 0 ? st.st_size : -1;
}

static void test_pending_come_back_in_order(void **state)
{
    struct wk_outbox *ob;
    assert_int_equal(wk_outbox_open(&ob, root, 1 << 20), 0);
    uint64_t a = wk_outbox_append(ob, "forge.jobs.events", "job_a", "{\"n\":1}");
    uint64_t b = wk_outbox_append(ob, "forge.jobs.events", "job_b", "{\"n\":2}");
    uint64_t c = wk_outbox_append(ob, "forge.jobs.events", "job_a", "{\"n\":3}");
    assert_true(a > 0 && b > a && c > b);
    wk_outbox_done(ob, b);
    wk_outbox_done(ob, b); /* repeated: ignored */
    wk_outbox_done(ob, 999);
    assert_int_equal(wk_outbox_count(ob), 2);
    wk_outbox_close(ob); /* pending: the file stays */
    assert_true(file_size("outbox-0.log") > 0);

    struct seen s = {0};
    assert_int_equal(wk_outbox_open(&ob, root, 1 << 20), 0);
    wk_outbox_pending(ob, collect, &s);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.key[0], "job_a");
    assert_string_equal(s.payload[0], "{\"n\":1}");
    assert_string_equal(s.payload[1], "{\"n\":3}");
    /* new messages never reuse a sequence the file holds */
    uint64_t d = wk_outbox_append(ob, "forge.jobs.events", "job_c", "{}");
    assert_true(d > c);
    wk_outbox_done(ob, s.seq[0]);
    wk_outbox_done(ob, s.seq[1]);
    wk_outbox_done(ob, d);
    assert_int_equal(wk_outbox_count(ob), 0);
    assert_int_equal(wk_outbox_bytes(ob), 0); /* nothing pending: emptied */
    wk_outbox_close(ob);
    assert_int_equal(file_size("outbox-0.log"), -1); /* removed */
}

static void test_torn_tail_is_cut(void **state)
{
    struct wk_outbox *ob;
    assert_int_equal(wk_outbox_open(&ob, root, 1 << 20), 0);
    assert_true(wk_outbox_append(ob, "forge.jobs.events", "job_a", "{\"whole\":true}") > 0);
    int64_t whole = wk_outbox_bytes(ob);
    wk_outbox_close(ob);

    /* a record half written when the agent died, then garbage */
    char path[PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/outbox-0.log", root);
    int fd = open(path, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    const unsigned char torn[] = {0x4e, 0x46, 0x4f, 0x42, 1, 0, 0, 0, 200, 0, 0, 0, 1, 2};
    assert_int_equal(write(fd, torn, sizeof(torn)), (ssize_t)sizeof(torn));
    close(fd);

    struct seen s = {0};
    assert_int_equal(wk_outbox_open(&ob, root, 1 << 20), 0);
    wk_outbox_pending(ob, collect, &s);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.payload[0], "{\"whole\":true}");
    assert_int_equal(wk_outbox_bytes(ob), whole);
    assert_int_equal(file_size("outbox-0.log"), whole);
    wk_outbox_close(ob);
}

static void test_dead_agents_journal_taken_over_live_one_left(void **state)
{
    struct wk_outbox *live, *dead, *next;
    assert_int_equal(wk_outbox_open(&live, root, 1 << 20), 0); /* outbox-0, held */
    assert_int_equal(wk_outbox_open(&dead, root, 1 << 20), 0); /* outbox-1 */
    assert_true(wk_outbox_append(live, "forge.jobs.events", "live", "{}") > 0);
    assert_true(wk_outbox_append(dead, "forge.jobs.events", "dead1", "{}") > 0);
    assert_true(wk_outbox_append(dead, "forge.jobs.events", "dead2", "{}") > 0);
    wk_outbox_close(dead); /* it "dies" with two pending */

    struct seen s = {0};
    assert_int_equal(wk_outbox_open(&next, root, 1 << 20), 0); /* takes outbox-1 itself */
    wk_outbox_pending(next, collect, &s);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.key[0], "dead1");
    assert_string_equal(s.key[1], "dead2");
    assert_int_equal(wk_outbox_count(live), 1); /* untouched */
    wk_outbox_close(next);

    /* a third agent while outbox-0 is held and outbox-1 is dead: it gets outbox-1's */
    struct wk_outbox *third;
    memset(&s, 0, sizeof(s));
    assert_int_equal(wk_outbox_open(&third, root, 1 << 20), 0);
    wk_outbox_pending(third, collect, &s);
    assert_int_equal(s.n, 2);
    wk_outbox_close(third);
    wk_outbox_close(live);

    /* outbox-0 (1 pending) and outbox-1 (2 pending): one agent merges both, in file order */
    memset(&s, 0, sizeof(s));
    assert_int_equal(wk_outbox_open(&next, root, 1 << 20), 0);
    wk_outbox_pending(next, collect, &s);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.key[0], "live");
    assert_string_equal(s.key[1], "dead1");
    assert_int_equal(file_size("outbox-1.log"), -1);
    wk_outbox_close(next);
}

static void test_bound_compacts_then_refuses(void **state)
{
    struct wk_outbox *ob;
    char payload[200];
    memset(payload, 'x', sizeof(payload) - 1);
    payload[sizeof(payload) - 1] = '\0';
    assert_int_equal(wk_outbox_open(&ob, root, 4096), 0);

    /* one pending message, then many delivered ones: the done records would outgrow the
     * bound; compaction keeps the file small and the pending message */
    uint64_t keep = wk_outbox_append(ob, "forge.jobs.events", "keep", payload);
    assert_true(keep > 0);
    for (int i = 0; i < 200; i++) {
        uint64_t seq = wk_outbox_append(ob, "forge.jobs.events", "tmp", payload);
        assert_true(seq > 0);
        wk_outbox_done(ob, seq);
        assert_true(wk_outbox_bytes(ob) <= 4096);
    }
    assert_int_equal(wk_outbox_count(ob), 1);

    /* pending messages alone fill it: ENOSPC, and what was written is still there */
    int written = 1;
    errno = 0;
    while (wk_outbox_append(ob, "forge.jobs.events", "fill", payload) > 0)
        written++;
    assert_int_equal(errno, ENOSPC);
    assert_true(written > 5);
    assert_int_equal(wk_outbox_count(ob), (size_t)written);
    wk_outbox_close(ob);

    struct seen s = {0};
    assert_int_equal(wk_outbox_open(&ob, root, 4096), 0);
    wk_outbox_pending(ob, collect, &s);
    assert_int_equal(s.n, written);
    assert_string_equal(s.key[0], "keep");
    wk_outbox_close(ob);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pending_come_back_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_is_cut, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_agents_journal_taken_over_live_one_left, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bound_compacts_then_refuses, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
