// Nexa Forge dashboard. Every page renders in the browser and talks only to this server's
// /api/*, which app/api/[...path]/route.ts relays to the gateway (NF_GATEWAY_URL, read at
// run time, so one build serves the dev stack on :8000 and the test stack on :18000).
/** @type {import('next').NextConfig} */
const nextConfig = {
  reactStrictMode: true,
  poweredByHeader: false,
  // The gateway serves /api/jobs/ and /api/workers/ (trailing slash): pass paths through
  // as the browser sent them instead of redirecting.
  skipTrailingSlashRedirect: true,
  // gzip would hold back Server-Sent Events (the live job timeline); the dashboard runs
  // next to the gateway, so there is little to gain from compressing anyway.
  compress: false,
  images: { unoptimized: true },
};

export default nextConfig;
