// A trivial anchor that calls no stage: parse the JSON body, answer JSON.
export default {
  async fetch(request) {
    const body = await request.json();
    return Response.json({ n: body.n, ok: true });
  },
};
