// The dashboard server's own liveness (./forge waits for it); says nothing about the gateway.
export const dynamic = 'force-dynamic';

export function GET(): Response {
  return Response.json({ status: 'ok' }, { headers: { 'Cache-Control': 'no-store' } });
}
