/*
 * Streamed answers (SSE, artifact content) outlive the handler that started them and
 * wait on timers and backend calls between chunks. The context keeps them in one list so
 * that the close hook can end each one (its close callback answers and frees it) instead of
 * leaking it with a timer that will never fire.
 */
#include "gw.h"

void gw_stream_link(struct gw_ctx *ctx, struct gw_stream *st)
{
    LIST_INSERT_HEAD(&ctx->streams, st, entry);
    st->linked = true;
}

/* A stream not (or no longer) linked is left alone. */
void gw_stream_unlink(struct gw_ctx *ctx, struct gw_stream *st)
{
    if (!st->linked)
        return;
    LIST_REMOVE(st, entry);
    st->linked = false;
}

void gw_streams_close_all(struct gw_ctx *ctx)
{
    struct gw_stream *st;

    while ((st = LIST_FIRST(&ctx->streams))) {
        gw_stream_unlink(ctx, st);
        st->close(st); /* frees st */
    }
}
