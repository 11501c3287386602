// The untrusted anchor: a Worker-style module. It sees the order, checks the business rules the
// enclave does not care about, and asks the confidential `sign` stage to sign the canonical order.
export default {
  async fetch(request, env) {
    if (request.method !== 'POST') {
      return Response.json({ error: 'POST an order as JSON' }, { status: 405, headers: { allow: 'POST' } });
    }
    let order;
    try {
      order = await request.json();
    } catch {
      return Response.json({ error: 'the body is not valid JSON' }, { status: 400 });
    }
    const currencies = env.CURRENCIES.split(',');
    if (!order || typeof order !== 'object' || !currencies.includes(order.currency)) {
      return Response.json({ error: `currency must be one of ${currencies.join(', ')}` }, { status: 422 });
    }
    if (!Number.isInteger(order.amountCents) || order.amountCents > Number(env.MAX_AMOUNT_CENTS)) {
      return Response.json({ error: 'amountCents must be a whole number within the limit' }, { status: 422 });
    }
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
