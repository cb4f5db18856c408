'use client';
// A job's events, live: EventSource on GET /api/jobs/{id}/events (text/event-stream).
// The gateway replays the job's history first, then streams until the job ends and says
// `event: end`. EventSource reconnects by itself after a dropped connection and sends
// Last-Event-ID, so nothing is missed or repeated; a refused stream (404, 403, gateway
// down) is not retried by the browser, so we ask the JSON list once to learn why.
import { useEffect, useState } from 'react';
import { api, type JobEvent, type JobStatus } from './api';

export type StreamState = 'connecting' | 'live' | 'reconnecting' | 'ended' | 'failed';

const EVENT_TYPES = [
  'queued',
  'assigned',
  'running',
  'progress',
  'log',
  'succeeded',
  'failed',
  'cancel_requested',
  'cancelled',
  'retrying',
  'dead_lettered',
  'checkpoint', // train: an epoch's checkpoint was stored (its artifact is in data.artifacts)
].map((t) => `forge.job.${t}`);

export function useJobEvents(jobId: string, onEvent?: (e: JobEvent) => void) {
  const [events, setEvents] = useState<JobEvent[]>([]);
  const [state, setState] = useState<StreamState>('connecting');
  const [endStatus, setEndStatus] = useState<JobStatus | null>(null);
  const [error, setError] = useState<unknown>(undefined);
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    setEvents([]);
    setState('connecting');
    setError(undefined);
    const seen = new Set<string>();
    const es = new EventSource(api.jobEventsUrl(jobId));
    const onMessage = (m: MessageEvent<string>) => {
      let ev: JobEvent;
      try {
        ev = JSON.parse(m.data) as JobEvent;
      } catch {
        return;
      }
      const id = ev.event_id || m.lastEventId;
      if (seen.has(id)) return;
      seen.add(id);
      setState('live');
      setEvents((prev) => [...prev, ev]);
      onEvent?.(ev);
    };
    for (const t of EVENT_TYPES) es.addEventListener(t, onMessage as EventListener);
    es.addEventListener('message', onMessage as EventListener);
    es.addEventListener('open', () => setState('live'));
    es.addEventListener('end', ((m: MessageEvent<string>) => {
      es.close();
      setState('ended');
      try {
        setEndStatus((JSON.parse(m.data) as { status: JobStatus }).status);
      } catch {
        /* the end marker is enough */
      }
    }) as EventListener);
    es.addEventListener('error', () => {
      if (es.readyState === EventSource.CLOSED) {
        setState('failed');
        api.jobEvents(jobId, { limit: 1 }).then(
          () => setError(new Error('The live stream was refused; the event list answers. Retry to reconnect.')),
          (e) => setError(e),
        );
      } else {
        setState('reconnecting');
      }
    });
    return () => es.close();
    // onEvent is read at event time through the closure of the first render on purpose:
    // callers pass a stable callback (useCallback).
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [jobId, attempt]);

  return { events, state, endStatus, error, retry: () => setAttempt((a) => a + 1) };
}
