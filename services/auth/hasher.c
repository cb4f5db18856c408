/*
 * Argon2id (crypto_pwhash_str) on worker threads, so a login never stalls the event loop.
 *
 *   loop: auth_hasher_hash/verify --lock--> todo list --signal--> a worker thread
 *   thread: crypto_pwhash_str(_verify) (~50-100 ms, 64 MiB) --lock--> done list
 *           --1 byte--> pipe
 *   loop: pipe readable -> take the whole done list -> each callback, on the loop thread
 *
 * The threads touch only the two lists (under the mutex) and the job they hold, never the
 * event base or a callback argument. Passwords are private copies, wiped once used.
 */
#define _GNU_SOURCE /* pipe2 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "auth.h"
#include "nf_log.h"
#include "nf_mem.h"

struct hash_job {
    struct hash_job *next;
    bool verify;
    char *password; /* private copy, wiped and freed as soon as it was used */
    size_t pwlen;
    char hash[crypto_pwhash_STRBYTES]; /* verify: the stored string; hash: the result */
    int rc;
    auth_hash_cb cb;
    void *arg;
};

struct job_list {
    struct hash_job *head, *tail;
};

struct auth_hasher {
    struct event_base *base;
    struct event *wake; /* the read end of the pipe */
    int pipe_r, pipe_w;
    pthread_t *threads;
    int nthreads; /* started */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job_list todo;  /* guarded by mu */
    struct job_list done;  /* guarded by mu */
    size_t ntodo, running; /* guarded by mu */
    bool stop;             /* guarded by mu */
    size_t max_queue;
    unsigned long long opslimit;
    size_t memlimit;
};

static void list_push(struct job_list *l, struct hash_job *job)
{
    job->next = NULL;
    if (l->tail)
        l->tail->next = job;
    else
        l->head = job;
    l->tail = job;
}

static struct hash_job *list_pop(struct job_list *l)
{
    struct hash_job *job = l->head;

    if (job) {
        l->head = job->next;
        if (!l->head)
            l->tail = NULL;
    }
    return job;
}

static void job_wipe(struct hash_job *job)
{
    if (job->password) {
        sodium_memzero(job->password, job->pwlen);
        free(job->password);
        job->password = NULL;
    }
}

static void job_free(struct hash_job *job)
{
    job_wipe(job);
    sodium_memzero(job->hash, sizeof(job->hash));
    free(job);
}

static void compute(const struct auth_hasher *h, struct hash_job *job)
{
    if (job->verify) {
        job->rc = crypto_pwhash_str_verify(job->hash, job->password, job->pwlen) == 0
                      ? AUTH_HASH_OK
                      : AUTH_HASH_MISMATCH;
    } else {
        job->rc =
            crypto_pwhash_str(job->hash, job->password, job->pwlen, h->opslimit, h->memlimit) == 0
                ? AUTH_HASH_OK
                : AUTH_HASH_FAILED;
    }
    job_wipe(job);
}

static void *worker(void *arg)
{
    struct auth_hasher *h = arg;
    struct hash_job *job;
    ssize_t n;

    pthread_mutex_lock(&h->mu);
    for (;;) {
        while (!h->stop && !h->todo.head)
            pthread_cond_wait(&h->cv, &h->mu);
        if (h->stop)
            break; /* what is still queued is cancelled by auth_hasher_free */
        job = list_pop(&h->todo);
        h->ntodo--;
        h->running++;
        pthread_mutex_unlock(&h->mu);

        compute(h, job);

        pthread_mutex_lock(&h->mu);
        h->running--;
        list_push(&h->done, job);
        pthread_mutex_unlock(&h->mu);
        /* A full pipe already holds a wake-up: EAGAIN is fine. */
        do {
            n = write(h->pipe_w, "x", 1);
        } while (n < 0 && errno == EINTR);
        pthread_mutex_lock(&h->mu);
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

/* Runs the callbacks of finished jobs, on the loop thread. */
static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    struct auth_hasher *h = arg;
    struct job_list done;
    struct hash_job *job;
    char buf[256];

    while (read(fd, buf, sizeof(buf)) > 0)
        ;
    pthread_mutex_lock(&h->mu);
    done = h->done;
    h->done.head = h->done.tail = NULL;
    pthread_mutex_unlock(&h->mu);
    while ((job = list_pop(&done)) != NULL) {
        job->cb(job->rc, !job->verify && job->rc == AUTH_HASH_OK ? job->hash : NULL, job->arg);
        job_free(job);
    }
}

int auth_hasher_new(struct auth_hasher **out, struct event_base *base, int threads, int max_queue,
                    unsigned long long opslimit, size_t memlimit)
{
    struct auth_hasher *h;
    int fds[2], i;

    if (threads < 1 || max_queue < 1)
        return -1;
    h = nf_xcalloc(1, sizeof(*h));
    h->base = base;
    h->pipe_r = h->pipe_w = -1;
    h->max_queue = (size_t)max_queue;
    h->opslimit = opslimit;
    h->memlimit = memlimit;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
        nf_log_error("hasher_failed", "cannot create the hasher pipe");
        goto fail;
    }
    h->pipe_r = fds[0];
    h->pipe_w = fds[1];
    h->wake = event_new(base, h->pipe_r, EV_READ | EV_PERSIST, on_wake, h);
    if (!h->wake || event_add(h->wake, NULL) != 0)
        goto fail;
    h->threads = nf_xcalloc((size_t)threads, sizeof(*h->threads));
    for (i = 0; i < threads; i++) {
        if (pthread_create(&h->threads[i], NULL, worker, h) != 0) {
            nf_log_error("hasher_failed", "cannot start a hasher thread");
            goto fail;
        }
        h->nthreads++;
    }
    *out = h;
    return 0;

fail:
    auth_hasher_free(h);
    return -1;
}

static void cancel_all(struct job_list *l)
{
    struct hash_job *job;

    while ((job = list_pop(l)) != NULL) {
        job_wipe(job);
        job->cb(AUTH_HASH_CANCELLED, NULL, job->arg);
        job_free(job);
    }
}

void auth_hasher_free(struct auth_hasher *h)
{
    int i;

    if (!h)
        return;
    pthread_mutex_lock(&h->mu);
    h->stop = true;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    for (i = 0; i < h->nthreads; i++)
        pthread_join(h->threads[i], NULL);
    /* No thread runs any more: the lists are ours without the lock. Finished jobs are
     * cancelled too, so every callback sees the same thing during a shutdown. */
    cancel_all(&h->done);
    cancel_all(&h->todo);
    if (h->wake)
        event_free(h->wake);
    if (h->pipe_r >= 0)
        close(h->pipe_r);
    if (h->pipe_w >= 0)
        close(h->pipe_w);
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    free(h->threads);
    free(h);
}

static int submit(struct auth_hasher *h, bool verify, const char *hash, const char *password,
                  auth_hash_cb cb, void *arg)
{
    struct hash_job *job;
    int rc = -1;

    if (!h || !password || !cb || (verify && (!hash || strlen(hash) >= crypto_pwhash_STRBYTES)))
        return -1;
    job = nf_xcalloc(1, sizeof(*job));
    job->verify = verify;
    job->pwlen = strlen(password);
    job->password = nf_xmalloc(job->pwlen + 1);
    memcpy(job->password, password, job->pwlen + 1);
    if (verify)
        memcpy(job->hash, hash, strlen(hash) + 1);
    job->cb = cb;
    job->arg = arg;

    pthread_mutex_lock(&h->mu);
    if (!h->stop && h->ntodo < h->max_queue) {
        list_push(&h->todo, job);
        h->ntodo++;
        pthread_cond_signal(&h->cv);
        rc = 0;
    }
    pthread_mutex_unlock(&h->mu);
    if (rc != 0)
        job_free(job);
    return rc;
}

int auth_hasher_hash(struct auth_hasher *h, const char *password, auth_hash_cb cb, void *arg)
{
    return submit(h, false, NULL, password, cb, arg);
}

int auth_hasher_verify(struct auth_hasher *h, const char *hash, const char *password,
                       auth_hash_cb cb, void *arg)
{
    return submit(h, true, hash, password, cb, arg);
}

size_t auth_hasher_pending(const struct auth_hasher *h)
{
    struct auth_hasher *m = (struct auth_hasher *)h; /* the mutex changes, nothing else */
    size_t n;

    pthread_mutex_lock(&m->mu);
    n = m->ntodo + m->running;
    pthread_mutex_unlock(&m->mu);
    return n;
}
