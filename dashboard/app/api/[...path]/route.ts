// /api/* -> the gateway's /api/* (same path, query, body, cookie); see lib/proxy.ts, and
// lib/proxy-node.ts for the bodies streamed on (uploads to POST /api/files).
import { relay } from '@/lib/proxy';
import { relayUpload, streamsBody } from '@/lib/proxy-node';

export const dynamic = 'force-dynamic';
export const runtime = 'nodejs';

function handler(req: Request): Promise<Response> {
  const path = new URL(req.url).pathname;
  return streamsBody(req) ? relayUpload(req, path) : relay(req, path);
}

export { handler as GET, handler as POST, handler as PUT, handler as PATCH, handler as DELETE };
