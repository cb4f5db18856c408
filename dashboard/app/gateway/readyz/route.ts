// The gateway's GET /readyz (200 ready / 503 unready, one check per backend), for the
// Overview's system health; 502 gateway_unreachable when the gateway does not answer.
import { relay } from '@/lib/proxy';

export const dynamic = 'force-dynamic';
export const runtime = 'nodejs';

export function GET(req: Request): Promise<Response> {
  return relay(req, '/readyz');
}
