/* Unit tests for nf-auth's Argon2id worker threads (hasher.c): results come back on the
 * loop thread, verification matches only the right password, the queue is bounded, and
 * freeing the hasher cancels what is pending with exactly one callback each. Uses the
 * MIN cost limits so the tests run fast; the service uses INTERACTIVE. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <event2/event.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "nf_test.h"

struct result {
    int calls;
    int rc;
    char hash[crypto_pwhash_STRBYTES];
    pthread_t thread; /* where the callback ran */
};

static struct event_base *base;

static int setup(void **state)
{
    if (sodium_init() < 0)
        return -1;
    base = event_base_new();
    return base ? 0 : -1;
}

static int teardown(void **state)
{
    event_base_free(base);
    return 0;
}

static void done(int rc, const char *hash, void *arg)
{
    struct result *r = arg;

    r->calls++;
    r->rc = rc;
    r->thread = pthread_self();
    if (hash)
        snprintf(r->hash, sizeof(r->hash), "%s", hash);
}

/* Runs the loop until every result has its callback (or 10 s pass). */
static void wait_all(struct result *rs, size_t n)
{
    struct timeval tick = {0, 10000};
    int rounds;
    size_t i;

    for (rounds = 0; rounds < 1000; rounds++) {
        for (i = 0; i < n; i++)
            if (rs[i].calls == 0)
                break;
        if (i == n)
            return;
        event_base_loopexit(base, &tick);
        event_base_dispatch(base);
    }
    fail_msg("callbacks did not arrive");
}

static struct auth_hasher *hasher(int threads, int queue)
{
    struct auth_hasher *h = NULL;

    assert_int_equal(auth_hasher_new(&h, base, threads, queue, crypto_pwhash_OPSLIMIT_MIN,
                                     crypto_pwhash_MEMLIMIT_MIN),
                     0);
    return h;
}

static void test_hash_then_verify(void **state)
{
    struct auth_hasher *h = hasher(2, 16);
    struct result made = {0}, good = {0}, bad = {0}, garbage = {0};
    char pw[32];

    snprintf(pw, sizeof(pw), "correct horse battery");
    assert_int_equal(auth_hasher_hash(h, pw, done, &made), 0);
    memset(pw, 'x', sizeof(pw) - 1); /* the hasher works on its own copy */
    assert_int_equal(made.calls, 0); /* never called synchronously */
    wait_all(&made, 1);
    assert_int_equal(made.calls, 1);
    assert_int_equal(made.rc, AUTH_HASH_OK);
    assert_true(pthread_equal(made.thread, pthread_self())); /* on the loop's thread */
    assert_memory_equal(made.hash, "$argon2id$", 10);
    assert_null(strstr(made.hash, "correct horse"));

    assert_int_equal(auth_hasher_verify(h, made.hash, "correct horse battery", done, &good), 0);
    assert_int_equal(auth_hasher_verify(h, made.hash, "correct horse batterY", done, &bad), 0);
    assert_int_equal(auth_hasher_verify(h, "$argon2id$nonsense", "x", done, &garbage), 0);
    wait_all(&good, 1);
    wait_all(&bad, 1);
    wait_all(&garbage, 1);
    assert_int_equal(good.rc, AUTH_HASH_OK);
    assert_int_equal(bad.rc, AUTH_HASH_MISMATCH);
    assert_int_equal(garbage.rc, AUTH_HASH_MISMATCH);
    assert_string_equal(good.hash, ""); /* verification hands out no hash */
    assert_int_equal(good.calls + bad.calls + garbage.calls, 3);
    assert_int_equal(auth_hasher_pending(h), 0);
    auth_hasher_free(h);
}

static void test_many_jobs_each_called_once(void **state)
{
    struct auth_hasher *h = hasher(3, 64);
    struct result rs[40];
    char pw[32];
    size_t i;

    memset(rs, 0, sizeof(rs));
    for (i = 0; i < 40; i++) {
        snprintf(pw, sizeof(pw), "password number %zu", i);
        assert_int_equal(auth_hasher_hash(h, pw, done, &rs[i]), 0);
    }
    wait_all(rs, 40);
    for (i = 0; i < 40; i++) {
        assert_int_equal(rs[i].calls, 1);
        assert_int_equal(rs[i].rc, AUTH_HASH_OK);
        if (i > 0) /* a fresh salt each time */
            assert_string_not_equal(rs[i].hash, rs[i - 1].hash);
    }
    auth_hasher_free(h);
}

static void test_queue_bound_and_refusals(void **state)
{
    struct auth_hasher *h = NULL;
    struct result rs[8];
    int accepted = 0, i;

    /* costly jobs (64 MiB each), so the one thread is still busy while we queue */
    assert_int_equal(auth_hasher_new(&h, base, 1, 2, crypto_pwhash_OPSLIMIT_MIN,
                                     crypto_pwhash_MEMLIMIT_INTERACTIVE),
                     0);
    memset(rs, 0, sizeof(rs));
    for (i = 0; i < 8; i++)
        accepted += auth_hasher_hash(h, "some long password", done, &rs[i]) == 0;
    /* at most the queue plus the one a thread may already have taken */
    assert_true(accepted >= 2 && accepted <= 3);
    assert_int_equal(auth_hasher_hash(NULL, "pw", done, &rs[0]), -1);
    assert_int_equal(auth_hasher_hash(h, NULL, done, &rs[0]), -1);
    assert_int_equal(auth_hasher_verify(h, NULL, "pw", done, &rs[0]), -1);
    auth_hasher_free(h); /* cancels or finishes each accepted job, one callback each */
    for (i = 0; i < 8; i++) {
        if (i < accepted) {
            assert_int_equal(rs[i].calls, 1);
            assert_int_equal(rs[i].rc, AUTH_HASH_CANCELLED);
        } else {
            assert_int_equal(rs[i].calls, 0); /* refused: never called */
        }
    }
    auth_hasher_free(NULL);
}

static void test_bad_arguments(void **state)
{
    struct auth_hasher *h = (struct auth_hasher *)0x1;

    assert_int_equal(
        auth_hasher_new(&h, base, 0, 4, crypto_pwhash_OPSLIMIT_MIN, crypto_pwhash_MEMLIMIT_MIN),
        -1);
    assert_int_equal(
        auth_hasher_new(&h, base, 1, 0, crypto_pwhash_OPSLIMIT_MIN, crypto_pwhash_MEMLIMIT_MIN),
        -1);
    assert_ptr_equal(h, (struct auth_hasher *)0x1); /* untouched on failure */
}

int main(void)
{
    return NF_TEST_RUN_GROUP(setup, teardown, test_hash_then_verify,
                             test_many_jobs_each_called_once, test_queue_bound_and_refusals,
                             test_bad_arguments);
}
