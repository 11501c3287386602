// The untrusted anchor: a Worker-style module. It sees the order, checks the business rules the
// enclave does not care about, and asks the confidential `sign` stage to sign the canonical order.
//
// A sealed order (docs/security.md) it cannot read: it checks the business rules on the fields the
// manifest lets the client show in clear (currency, amountCents; the enclave checks they equal the
// sealed ones) and passes the sealed bytes through; the signature comes back sealed to the client.
const SEALED = 'application/vnd.ebcc.sealed+json';

function checkRules(order, env) {
  const currencies = env.CURRENCIES.split(',');
  if (!order || typeof order !== 'object' || !currencies.includes(order.currency)) {
    return Response.json({ error: `currency must be one of ${currencies.join(', ')}` }, { status: 422 });
  }
  if (!Number.isInteger(order.amountCents) || order.amountCents > Number(env.MAX_AMOUNT_CENTS)) {
    return Response.json({ error: 'amountCents must be a whole number within the limit' }, { status: 422 });
  }
  return undefined;
}

async function sealedOrder(request, env) {
  const sealed = new Uint8Array(await request.arrayBuffer());
  let envelope;
  try {
    envelope = JSON.parse(new TextDecoder().decode(sealed));
  } catch {
    return Response.json({ error: 'the sealed body is not a JSON envelope' }, { status: 400 });
  }
  const refused = checkRules(envelope.public ?? {}, env);
  if (refused) return refused;
  try {
    const signed = await env.stages.sign.invoke(sealed, {
      nonce: request.headers.get('x-ebcc-nonce') ?? undefined,
    });
    return new Response(await signed.bytes(), { headers: { 'content-type': SEALED } });
  } catch (error) {
    return Response.json({ error: error.message, code: error.code }, { status: error.status ?? 502 });
  }
}

export default {
  async fetch(request, env) {
    if (request.method !== 'POST') {
      return Response.json({ error: 'POST an order as JSON' }, { status: 405, headers: { allow: 'POST' } });
    }
    if ((request.headers.get('content-type') ?? '').startsWith(SEALED)) return sealedOrder(request, env);
    let order;
    try {
      order = await request.json();
    } catch {
      return Response.json({ error: 'the body is not valid JSON' }, { status: 400 });
    }
    const refused = checkRules(order, env);
    if (refused) return refused;
    const signed = await env.stages.sign.invoke(
      {
        orderId: order.orderId,
        amountCents: order.amountCents,
        currency: order.currency,
        items: order.items,
      },
      { nonce: request.headers.get('x-ebcc-nonce') ?? undefined },
    );
    return Response.json({ order: order.orderId, ...(await signed.json()) });
  },
};
