// A trivial anchor that calls one trivial persistent stage: parse the JSON body, pass it to the stage,
// answer JSON with the stage's reply.
export default {
  async fetch(request, env) {
    const body = await request.json();
    const reply = await env.stages.echo.invoke(body);
    return Response.json({ n: body.n, stage: await reply.json() });
  },
};
