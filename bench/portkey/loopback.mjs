// Preloaded into the Portkey gateway (node --import): its start-server.js calls
// serve({fetch, port}) without a hostname, so it would listen on every interface.
// Force listen() onto 127.0.0.1; the bench only ever loads loopback addresses.
import net from 'node:net';

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === 'number' || typeof args[0] === 'string') {
    const cb = args.find((a) => typeof a === 'function');
    return listen.call(this, Number(args[0]), '127.0.0.1', ...(cb ? [cb] : []));
  }
  if (args[0] && typeof args[0] === 'object') {
    args[0] = { ...args[0], host: '127.0.0.1' };
  }
  return listen.apply(this, args);
};

// Node 20 workaround: for streamed responses the gateway passes the upstream fetch()
// Response through and then appends x-portkey-* headers to it, but undici's fetch
// responses have immutable headers ("TypeError: immutable"), so every streamed request
// fails with 500. Re-wrap each upstream response in a Response we own (same status,
// headers and body stream; no copy of the body).
const upstreamFetch = globalThis.fetch;
globalThis.fetch = async (...args) => {
  const r = await upstreamFetch(...args);
  const nullBody = [101, 204, 205, 304].includes(r.status);
  return new Response(nullBody ? null : r.body,
                      { status: r.status, statusText: r.statusText, headers: r.headers });
};
