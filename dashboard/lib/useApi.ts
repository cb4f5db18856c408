'use client';
// Loads data for a page: loading / data / error, a reload, and optional polling that
// keeps the data on screen while it refreshes (and shows the error beside it when a
// refresh fails).
import { useCallback, useEffect, useRef, useState } from 'react';

export interface Loaded<T> {
  data: T | undefined;
  error: unknown;
  loading: boolean;
  reload: () => void;
}

export function useApi<T>(
  load: (signal: AbortSignal) => Promise<T>,
  deps: readonly unknown[],
  opts: { refreshMs?: number; enabled?: boolean } = {},
): Loaded<T> {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<unknown>(undefined);
  const [loading, setLoading] = useState(true);
  const [tick, setTick] = useState(0);
  const loadRef = useRef(load);
  loadRef.current = load;
  const enabled = opts.enabled ?? true;

  // A change of deps starts over (loading, no stale data of another filter or page).
  useEffect(() => {
    setData(undefined);
    setError(undefined);
    setLoading(true);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, deps);

  useEffect(() => {
    if (!enabled) return;
    const ctl = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const run = async () => {
      try {
        const d = await loadRef.current(ctl.signal);
        if (ctl.signal.aborted) return;
        setData(d);
        setError(undefined);
      } catch (e) {
        if (ctl.signal.aborted) return;
        setError(e);
      } finally {
        if (!ctl.signal.aborted) {
          setLoading(false);
          if (opts.refreshMs) timer = setTimeout(run, opts.refreshMs);
        }
      }
    };
    run();
    return () => {
      ctl.abort();
      if (timer) clearTimeout(timer);
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, tick, enabled, opts.refreshMs]);

  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { data, error, loading, reload };
}
