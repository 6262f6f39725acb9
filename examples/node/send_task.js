// Enqueue a tagging job from a Node.js application with celery-node: nothing of this project.
//
//     npm install && node send_task.js --broker amqp://guest:guest@localhost:5672// \
//         --request-id campaign-42 https://cdn.example.com/a.mp4
//
// The message is `aperture.create_job` with JSON keyword arguments (docs/schemas/aperture.create_job.json)
// on the queue `aperture.submit`. The request id is the idempotency key: sending the same one again never
// creates a second job. Prints the message's task id once the broker has it.
"use strict";

const celery = require("celery-node");

function parse(argv) {
  const args = { broker: process.env.APERTURE_BROKER_URL || "amqp://guest:guest@localhost:5672//", urls: [] };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--broker") args.broker = argv[++i];
    else if (argv[i] === "--request-id") args.requestId = argv[++i];
    else args.urls.push(argv[i]);
  }
  if (!args.urls.length) throw new Error("give at least one asset URL");
  return args;
}

// celery-node declares every queue it sends to with no arguments. On RabbitMQ the workers' queues are
// quorum queues, and RabbitMQ refuses a declaration that differs from the queue's: declare it as they do.
function declareAsQuorum(broker) {
  broker.channel = broker.channel.then((ch) => {
    const assertQueue = ch.assertQueue.bind(ch);
    ch.assertQueue = (queue, options) => assertQueue(queue, { ...options, arguments: { "x-queue-type": "quorum" } });
    return ch;
  });
}

async function main() {
  const args = parse(process.argv.slice(2));
  const rabbitmq = /^amqps?:\/\//.test(args.broker);
  // No result backend is read (the system answers with a callback task); celery-node wants one anyway.
  const client = celery.createClient(args.broker, args.broker, "aperture.submit");
  if (rabbitmq) declareAsQuorum(client.broker);
  const kwargs = {
    assets: args.urls.map((url, i) => ({ url, id: `asset-${i}` })),
    client_tags: [],
    request_id: args.requestId || `example-node-${Date.now()}`,
  };
  const taskId = require("crypto").randomUUID();
  await client.isReady();
  const message = client.createTaskMessage(taskId, "aperture.create_job", [], kwargs);
  const { headers, properties, body } = message;
  await client.broker.publish(body, "", "aperture.submit", headers, properties);
  if (rabbitmq) await (await client.broker.channel).close(); // flushes what is buffered before disconnecting
  await client.disconnect();
  console.log(taskId);
}

main().catch((err) => {
  console.error(`could not send aperture.create_job: ${err.message}`);
  process.exit(1);
});
