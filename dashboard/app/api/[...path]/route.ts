// /api/* -> the gateway's /api/* (same path, query, body, cookie); see lib/proxy.ts.
import { relay } from '@/lib/proxy';

export const dynamic = 'force-dynamic';
export const runtime = 'nodejs';

function handler(req: Request): Promise<Response> {
  return relay(req, new URL(req.url).pathname);
}

export { handler as GET, handler as POST, handler as PUT, handler as PATCH, handler as DELETE };
