/*
 * Streamed answers (SSE, artifact content) outlive the handler that started them and
 * wait on timers and backend calls between chunks. The context keeps them in one list so
 * that gw_free can end each one (its close callback answers and frees it) instead of
 * leaking it with a timer that will never fire.
 */
#include "gw.h"

void gw_stream_link(struct gw_ctx *ctx, struct gw_stream *st)
{
    st->prev = NULL;
    st->next = ctx->streams;
    if (ctx->streams)
        ctx->streams->prev = st;
    ctx->streams = st;
}

void gw_stream_unlink(struct gw_ctx *ctx, struct gw_stream *st)
{
    if (st->prev)
        st->prev->next = st->next;
    else if (ctx->streams == st)
        ctx->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    st->prev = st->next = NULL;
}

void gw_streams_close_all(struct gw_ctx *ctx)
{
    struct gw_stream *st;

    while ((st = ctx->streams)) {
        gw_stream_unlink(ctx, st);
        st->close(st); /* frees st */
    }
}
