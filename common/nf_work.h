#pragma once
/*
 * nf_work: the life of one unit of consumed work (usually one Kafka message, or a batch of
 * them) inside a service, written once for every consumer.
 *
 *   nf_work_new --> nf_work_start (maybe queued behind its lane) --> stage 1 --> ...
 *       each stage calls one backend; its callback then does one of
 *         nf_work_goto(next) | nf_work_retry(why: same stage after a backoff)
 *         | nf_work_delay(ms, stage) | nf_work_produce_* (a fan-out, then a stage)
 *         | nf_work_finish (messages marked done, item freed)
 *
 * A lane serialises the items of one key (e.g. a job id), so the events of a job are
 * applied in the order Kafka delivered them while many messages are in flight. An item may
 * leave its lane early (nf_work_release_lane) while it still waits for something slow.
 *
 * Shutdown: items whose stage waits on a backend (`busy`) may finish; items waiting in a
 * lane, a backoff or a delay are abandoned once *q->stopping is set: their messages are not
 * marked done and are redelivered to whoever consumes the partition next. Once
 * *q->closing is set (teardown), callbacks only unwind: nothing is marked done or started.
 *
 * Ownership: the queue owns every item; an item owns its timer and whatever its dtor
 * frees; w->msg belongs to the item until finish hands it back to nf_kafka.
 */
#include <cjson/cJSON.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/queue.h>

struct nf_counter;
struct nf_gauge;
struct nf_kafka_msg;
struct nf_kafka_producer;
struct nf_work;
struct nf_work_lane;

typedef void (*nf_work_step)(struct nf_work *w);

/* The items of one service; a field of its context. */
struct nf_work_queue {
    struct event_base *base;
    struct nf_kafka_producer *producer; /* for nf_work_produce; may be NULL if unused */
    const bool *stopping;               /* the service's flags (struct nf_svc) */
    const bool *closing;
    void *ctx;                  /* the service context, copied into every item */
    struct nf_counter *retries; /* stages retried after a backend failure; may be NULL */
    struct nf_gauge *inflight;  /* live items; may be NULL */
    LIST_HEAD(, nf_work) works; /* every live item */
    size_t nworks;
    struct nf_work_lane *lanes; /* keys held by an item */
};

struct nf_work {
    struct nf_work_queue *q;
    void *ctx;                /* q->ctx */
    struct nf_kafka_msg *msg; /* ours until finish; may be NULL */
    const char *what;         /* current stage name, for logs */
    /* Called by finish (unless closing) to mark the item's messages done; NULL: msg. */
    void (*done)(struct nf_work *w);
    void (*dtor)(struct nf_work *w); /* frees the kind's own fields; may be NULL */
    /* The rest belongs to nf_work. */
    LIST_ENTRY(nf_work) link;  /* in q->works */
    struct nf_work_lane *lane; /* the lane held or waited in */
    struct nf_work *lane_next;
    struct event *timer; /* backoff and delayed stages */
    nf_work_step step, after_produce;
    int backoff_ms;
    int pending; /* delivery reports outstanding (+1 while queuing) */
    bool produce_failed;
    bool busy; /* a stage waits on a backend callback */
};

/* Sets up an empty queue; the pointers are borrowed and must outlive it. */
void nf_work_queue_init(struct nf_work_queue *q, struct event_base *base,
                        struct nf_kafka_producer *producer, const bool *stopping,
                        const bool *closing, void *ctx);
/* Items whose stage waits on a backend (the drain waits for 0). */
size_t nf_work_busy(const struct nf_work_queue *q);
/* Frees every item and lane left, marking nothing done (teardown, after the backends). */
void nf_work_free_all(struct nf_work_queue *q);

/* Allocates a zeroed item of `size` bytes (>= sizeof(struct nf_work); a kind embeds
 * struct nf_work first) holding msg (may be NULL), and links it. */
struct nf_work *nf_work_new(struct nf_work_queue *q, struct nf_kafka_msg *msg, size_t size);
/* Runs step now, or queues it behind the items holding lane `key` (NULL: no ordering). */
void nf_work_start(struct nf_work *w, const char *key, nf_work_step step);
/* Moves on to the next stage (resets the backoff) and runs it. */
void nf_work_goto(struct nf_work *w, nf_work_step step);
/* The current stage failed: run it again after a backoff (100 ms doubling to 5 s). */
void nf_work_retry(struct nf_work *w, const char *why);
/*
 * The first lines of a stage's backend callback; true when the callback must stop here.
 * nf_work_closing: the service tears down (the item is no longer busy and only waits to be
 * freed). nf_work_failed also when the call failed, i.e. res (the backend's result) is NULL:
 * the stage is retried after a backoff with err as the reason.
 */
bool nf_work_closing(struct nf_work *w);
bool nf_work_failed(struct nf_work *w, const void *res, const char *err);
/* Runs step after delay_ms (abandoned if the service stops meanwhile). */
void nf_work_delay(struct nf_work *w, int delay_ms, nf_work_step step);
/* Cancels a pending delay or backoff (e.g. a batch sealed before its linger ran out). */
void nf_work_cancel_delay(struct nf_work *w);
/* Lets the next item of the lane start while w still waits for something else. */
void nf_work_release_lane(struct nf_work *w);
/* Marks the messages done (unless closing), releases the lane, frees w. */
void nf_work_finish(struct nf_work *w);
/* Frees w without marking anything done. NULL ok. */
void nf_work_free(struct nf_work *w);

/*
 * A produce fan-out: begin, then produce one or more messages, then end. When every
 * delivery report is in: all delivered -> stage `then`; any failed -> the current stage
 * is retried (it must produce the whole fan-out again; consumers dedupe).
 */
void nf_work_produce_begin(struct nf_work *w);
/* Produces ev (consumed) as JSON. */
void nf_work_produce(struct nf_work *w, const char *topic, const char *key, cJSON *ev);
/* Produces a ready payload (copied). */
void nf_work_produce_raw(struct nf_work *w, const char *topic, const char *key, const char *payload,
                         size_t len);
void nf_work_produce_end(struct nf_work *w, nf_work_step then);
