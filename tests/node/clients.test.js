// Client compatibility tests with kafkajs: what a Node user of a Kafka client does against the
// broker named by KAIROS_BOOTSTRAP (host:port[,host:port...]).
//
// Run (from tests/node, after `npm ci`):
//
//   KAIROS_BOOTSTRAP=127.0.0.1:9092 node --test
//
// (the same as `npm test`). Every test uses topics and groups with a random suffix and deletes them
// at the end, so reruns against a long-lived broker work. Nothing is skipped: without
// KAIROS_BOOTSTRAP every test fails. KAIROS_KAFKAJS_LOG=DEBUG shows kafkajs's requests (the
// default is ERROR).
//
// Left out, as kafkajs 2.2.4 limits: compression other than gzip (snappy, lz4 and zstd need
// codec packages); incremental config changes (kafkajs only has the legacy AlterConfigs, which
// replaces a topic's overrides: checked below as such).
'use strict'

process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1'

const test = require('node:test')
const assert = require('node:assert/strict')
const crypto = require('node:crypto')
const {
  Kafka,
  logLevel,
  CompressionTypes,
  ConfigResourceTypes,
  AssignerProtocol,
} = require('kafkajs')

// Every single step (a request, a wait for group state, a read) is bounded by this.
const WAIT = 30000

function brokers() {
  const v = (process.env.KAIROS_BOOTSTRAP || '').trim()
  if (!v) {
    assert.fail(
      "KAIROS_BOOTSTRAP is not set: set it to the broker's host:port (e.g. KAIROS_BOOTSTRAP=127.0.0.1:9092 node --test)"
    )
  }
  return v.split(',')
}

function unique(prefix) {
  return `${prefix}-${crypto.randomBytes(6).toString('hex')}`
}

// kafkajs's console logger, but with 64-bit numbers (BigInt) printable: at DEBUG the stock one
// throws 'Do not know how to serialize a BigInt' on logging a DeleteRecords response, which fails
// the request itself.
const logCreator = () => ({ namespace, label, log }) => {
  const prefix = namespace ? `[${namespace}] ` : ''
  const line = JSON.stringify({ level: label, ...log, message: `${prefix}${log.message}` }, (_, v) =>
    typeof v === 'bigint' ? v.toString() : v
  )
  console.error(line)
}

function kafka(clientId = 'kairos-clienttests-node') {
  const level = (process.env.KAIROS_KAFKAJS_LOG || 'ERROR').toUpperCase()
  return new Kafka({
    clientId,
    brokers: brokers(),
    logLevel: logLevel[level] ?? logLevel.ERROR,
    logCreator,
    connectionTimeout: 10000,
    requestTimeout: WAIT,
    retry: { retries: 5 },
  })
}

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

// Runs promise, failing with `what` if it takes longer than WAIT.
async function within(what, promise, ms = WAIT) {
  let timer
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms)
  })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}

// A failure that no retry mends: eventually() rethrows it at once.
class Fatal extends Error {}

// Retries fn every 200 ms until it returns without throwing (metadata and group state may take a
// moment to settle); fails with fn's last error after WAIT.
async function eventually(what, fn) {
  const deadline = Date.now() + WAIT
  for (;;) {
    let err
    try {
      return await within(what, Promise.resolve().then(fn), 5000)
    } catch (e) {
      if (e instanceof Fatal) throw e
      err = e
    }
    if (Date.now() > deadline) {
      throw new Error(`${what}: still failing after ${WAIT} ms: ${err && err.message}`, { cause: err })
    }
    await sleep(200)
  }
}

// Deletes groups and topics at the end of a test; failures are only logged (the admin test checks
// deleteGroups and deleteTopics itself).
async function cleanup(admin, t, { topics = [], groups = [] }) {
  try {
    const { groups: listed } = await within('cleanup listGroups', admin.listGroups())
    const left = groups.filter(g => listed.some(l => l.groupId === g))
    if (left.length) await within('cleanup deleteGroups', admin.deleteGroups(left))
  } catch (e) {
    t.diagnostic(`cleanup: deleting groups ${groups}: ${e.message}`)
  }
  try {
    const listed = await within('cleanup listTopics', admin.listTopics())
    const left = topics.filter(tp => listed.includes(tp))
    if (left.length) await within('cleanup deleteTopics', admin.deleteTopics({ topics: left, timeout: WAIT }))
  } catch (e) {
    t.diagnostic(`cleanup: deleting topics ${topics}: ${e.message}`)
  }
}

async function topicConfigs(admin, topic, configNames) {
  const { resources } = await within(
    'describeConfigs',
    admin.describeConfigs({
      resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configNames }],
      includeSynonyms: false,
    })
  )
  assert.equal(resources.length, 1, `describeConfigs: ${resources.length} resources`)
  assert.equal(resources[0].errorCode, 0, `describeConfigs ${topic}: ${resources[0].errorMessage}`)
  return Object.fromEntries(resources[0].configEntries.map(e => [e.configName, e]))
}

async function partitionCount(admin, topic) {
  const { topics } = await admin.fetchTopicMetadata({ topics: [topic] })
  assert.equal(topics.length, 1)
  assert.equal(topics[0].name, topic)
  for (const p of topics[0].partitions) {
    assert.equal(p.partitionErrorCode, 0, `${topic}/${p.partitionId}: error ${p.partitionErrorCode}`)
    assert.ok(p.leader >= 0, `${topic}/${p.partitionId}: no leader`)
  }
  return topics[0].partitions.length
}

async function offsetsOf(admin, topic) {
  const os = await within('fetchTopicOffsets', admin.fetchTopicOffsets(topic))
  const byPartition = {}
  for (const o of os) byPartition[o.partition] = { low: o.low, high: o.high }
  return byPartition
}

async function committed(admin, groupId, topic) {
  const res = await within('fetchOffsets', admin.fetchOffsets({ groupId, topics: [topic] }))
  assert.equal(res.length, 1, `fetchOffsets: ${JSON.stringify(res)}`)
  assert.equal(res[0].topic, topic)
  const byPartition = {}
  for (const p of res[0].partitions) byPartition[p.partition] = p.offset
  return byPartition
}

async function describeGroup(admin, groupId) {
  const { groups } = await within('describeGroups', admin.describeGroups([groupId]))
  assert.equal(groups.length, 1)
  assert.equal(groups[0].groupId, groupId)
  assert.equal(groups[0].errorCode, 0, `describeGroups ${groupId}: error ${groups[0].errorCode}`)
  return groups[0]
}

test('admin: topics, configs, partitions, offsets, records, cluster, groups', { timeout: 300000 }, async t => {
  const k = kafka()
  const admin = k.admin()
  const topic = unique('node-admin')
  const groupId = unique('node-admin-group')
  await within('admin connect', admin.connect())
  const producer = k.producer()
  let consumer
  t.after(async () => {
    if (consumer) await consumer.disconnect().catch(() => {})
    await producer.disconnect().catch(() => {})
    await cleanup(admin, t, { topics: [topic], groups: [groupId] })
    await admin.disconnect()
  })

  // createTopics with a config; a second create says the topic exists (false).
  const created = await within(
    'createTopics',
    admin.createTopics({
      topics: [{ topic, numPartitions: 3, configEntries: [{ name: 'retention.ms', value: '3600000' }] }],
      waitForLeaders: true,
      timeout: WAIT,
    })
  )
  assert.equal(created, true, 'createTopics returned false for a new topic')
  assert.equal(
    await within('createTopics (again)', admin.createTopics({ topics: [{ topic, numPartitions: 3 }], timeout: WAIT })),
    false,
    'createTopics of an existing topic should return false (TOPIC_ALREADY_EXISTS)'
  )

  // listTopics and fetchTopicMetadata.
  await eventually('listTopics', async () => {
    const topics = await admin.listTopics()
    assert.ok(topics.includes(topic), `${topic} not among ${topics.length} listed topics`)
  })
  await eventually('fetchTopicMetadata', async () => assert.equal(await partitionCount(admin, topic), 3))

  // describeConfigs: the override and only the names asked for.
  let cfg = await topicConfigs(admin, topic)
  assert.equal(cfg['retention.ms']?.configValue, '3600000', 'retention.ms after create')
  assert.equal(cfg['retention.ms'].isDefault, false)
  assert.equal(cfg['retention.ms'].configSource, 1, 'retention.ms should come from DYNAMIC_TOPIC_CONFIG (1)')
  assert.ok(cfg['cleanup.policy'], 'describeConfigs without names should list every topic config')
  cfg = await topicConfigs(admin, topic, ['retention.ms'])
  assert.deepEqual(Object.keys(cfg), ['retention.ms'], 'describeConfigs with configNames')

  // alterConfigs: kafkajs sends the legacy AlterConfigs, which replaces all of the topic's
  // overrides with the ones given: retention.ms goes back to its default.
  const altered = await within(
    'alterConfigs',
    admin.alterConfigs({
      validateOnly: false,
      resources: [
        {
          type: ConfigResourceTypes.TOPIC,
          name: topic,
          configEntries: [
            { name: 'max.message.bytes', value: '2097152' },
            { name: 'cleanup.policy', value: 'compact,delete' },
          ],
        },
      ],
    })
  )
  assert.equal(altered.resources.length, 1)
  assert.equal(altered.resources[0].errorCode, 0, `alterConfigs: ${altered.resources[0].errorMessage}`)
  await eventually('altered configs visible', async () => {
    const c = await topicConfigs(admin, topic)
    assert.equal(c['max.message.bytes'].configValue, '2097152')
    assert.equal(c['max.message.bytes'].configSource, 1)
    assert.equal(c['cleanup.policy'].configValue, 'compact,delete')
    assert.notEqual(c['retention.ms'].configValue, '3600000', 'retention.ms should no longer be overridden')
    assert.notEqual(c['retention.ms'].configSource, 1, 'retention.ms should no longer be a topic override')
  })

  // createPartitions: 3 -> 4.
  await within('createPartitions', admin.createPartitions({ topicPartitions: [{ topic, count: 4 }], timeout: WAIT }))
  await eventually('4 partitions in the metadata', async () => assert.equal(await partitionCount(admin, topic), 4))

  // 10 records into each partition.
  await within('producer connect', producer.connect())
  for (let p = 0; p < 4; p++) {
    const res = await within(
      'send',
      producer.send({
        topic,
        messages: Array.from({ length: 10 }, (_, i) => ({ partition: p, key: `k${p}-${i}`, value: 'v' })),
      })
    )
    assert.equal(res.length, 1)
    assert.equal(res[0].errorCode, 0)
    assert.equal(res[0].partition, p)
    assert.equal(res[0].baseOffset, '0')
  }

  // fetchTopicOffsets, deleteTopicRecords.
  const all = (low, high) => ({ 0: { low, high }, 1: { low, high }, 2: { low, high }, 3: { low, high } })
  assert.deepEqual(await offsetsOf(admin, topic), all('0', '10'))
  await within('deleteTopicRecords', admin.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: '4' }] }))
  assert.deepEqual(await offsetsOf(admin, topic), { ...all('0', '10'), 0: { low: '4', high: '10' } })

  // describeCluster.
  const cluster = await within('describeCluster', admin.describeCluster())
  assert.ok(cluster.brokers.length > 0, 'describeCluster: no brokers')
  for (const b of cluster.brokers) {
    assert.ok(b.host && b.port > 0 && b.nodeId >= 0, `describeCluster: bad broker ${JSON.stringify(b)}`)
  }
  assert.equal(new Set(cluster.brokers.map(b => b.nodeId)).size, cluster.brokers.length, 'duplicate broker ids')
  assert.ok(cluster.clusterId, 'describeCluster: no cluster id')
  assert.ok(
    cluster.brokers.some(b => b.nodeId === cluster.controller),
    `describeCluster: controller ${cluster.controller} is none of the brokers (kafkajs sends admin requests to it)`
  )
  t.diagnostic(`cluster ${cluster.clusterId}: brokers ${cluster.brokers.map(b => b.nodeId)}, controller ${cluster.controller}`)

  // A group member reads the 36 records left and commits.
  consumer = k.consumer({ groupId, heartbeatInterval: 500, maxWaitTimeInMs: 500 })
  await within('consumer connect', consumer.connect())
  await consumer.subscribe({ topics: [topic], fromBeginning: true })
  let read = 0
  await consumer.run({ eachMessage: async () => void read++ })
  await eventually('the member read the 36 records left', async () => assert.equal(read, 36))
  await eventually('offsets committed', async () =>
    assert.deepEqual(await committed(admin, groupId, topic), { 0: '10', 1: '10', 2: '10', 3: '10' })
  )

  // listGroups and describeGroups while the member is in.
  await eventually('listGroups', async () => {
    const { groups } = await admin.listGroups()
    const g = groups.find(g => g.groupId === groupId)
    assert.ok(g, `${groupId} not among ${groups.length} listed groups`)
    assert.equal(g.protocolType, 'consumer')
  })
  await eventually('describeGroups: Stable, one member with the 4 partitions', async () => {
    const g = await describeGroup(admin, groupId)
    assert.equal(g.state, 'Stable')
    assert.equal(g.protocolType, 'consumer')
    assert.equal(g.protocol, 'RoundRobinAssigner')
    assert.equal(g.members.length, 1)
    const { assignment } = AssignerProtocol.MemberAssignment.decode(g.members[0].memberAssignment)
    assert.deepEqual(assignment, { [topic]: [0, 1, 2, 3] })
  })
  await within('consumer disconnect', consumer.disconnect())
  consumer = undefined
  await eventually('describeGroups: Empty once the member left', async () => {
    const g = await describeGroup(admin, groupId)
    assert.equal(g.state, 'Empty')
    assert.equal(g.members.length, 0)
  })

  // setOffsets, resetOffsets (both commit through a short-lived member of the group).
  await within('setOffsets', admin.setOffsets({ groupId, topic, partitions: [{ partition: 1, offset: '5' }] }))
  await eventually('setOffsets visible', async () =>
    assert.deepEqual(await committed(admin, groupId, topic), { 0: '10', 1: '5', 2: '10', 3: '10' })
  )
  await within('resetOffsets', admin.resetOffsets({ groupId, topic, earliest: true }))
  await eventually('resetOffsets (earliest) visible', async () => {
    const res = await admin.fetchOffsets({ groupId, topics: [topic], resolveOffsets: false })
    const got = Object.fromEntries(res[0].partitions.map(p => [p.partition, p.offset]))
    t.diagnostic(`committed after resetOffsets(earliest): ${JSON.stringify(got)}`)
    // kafkajs commits the earliest offset as -2 (resolved by a consumer at start); an already
    // resolved one is the partition's log start offset.
    for (const [p, start] of Object.entries({ 0: '4', 1: '0', 2: '0', 3: '0' })) {
      assert.ok(got[p] === '-2' || got[p] === start, `partition ${p}: committed ${got[p]}, want -2 or ${start}`)
    }
  })

  // deleteGroups.
  const deleted = await within('deleteGroups', admin.deleteGroups([groupId]))
  assert.deepEqual(deleted.map(d => [d.groupId, d.errorCode]), [[groupId, 0]])
  await eventually('deleted group no longer listed', async () => {
    const { groups } = await admin.listGroups()
    assert.ok(!groups.some(g => g.groupId === groupId), `${groupId} still listed`)
  })
  assert.deepEqual(await committed(admin, groupId, topic), { 0: '-1', 1: '-1', 2: '-1', 3: '-1' })

  // deleteTopics.
  await within('deleteTopics', admin.deleteTopics({ topics: [topic], timeout: WAIT }))
  await eventually('deleted topic no longer listed', async () => {
    const topics = await admin.listTopics()
    assert.ok(!topics.includes(topic), `${topic} still listed`)
  })
})

test('producers (acks -1 idempotent, acks 1, gzip, keys, headers) and a group of two consumers', { timeout: 300000 }, async t => {
  const k = kafka()
  const admin = k.admin()
  const topic = unique('node-produce')
  const groupId = unique('node-group')
  await within('admin connect', admin.connect())
  const consumers = []
  const producers = []
  t.after(async () => {
    for (const c of consumers) await c.disconnect().catch(() => {})
    for (const p of producers) await p.disconnect().catch(() => {})
    await cleanup(admin, t, { topics: [topic], groups: [groupId] })
    await admin.disconnect()
  })
  assert.equal(
    await within('createTopics', admin.createTopics({ topics: [{ topic, numPartitions: 4 }], waitForLeaders: true, timeout: WAIT })),
    true
  )
  await eventually('fetchTopicMetadata', async () => assert.equal(await partitionCount(admin, topic), 4))

  // Two consumers; wait until they share the 4 partitions 2 and 2, then produce, so that each
  // reads its half and no rebalance happens while reading.
  const reads = new Map() // key -> [{ member, partition, offset, message }]
  const problems = []
  const assigned = {}
  const startConsumer = async name => {
    const c = k.consumer({ groupId, heartbeatInterval: 500, maxWaitTimeInMs: 500, sessionTimeout: 30000 })
    consumers.push(c)
    c.on(c.events.GROUP_JOIN, e => {
      assigned[name] = e.payload.memberAssignment[topic] || []
    })
    c.on(c.events.CRASH, e => problems.push(`consumer ${name} crashed: ${e.payload.error && e.payload.error.message}`))
    await within(`consumer ${name} connect`, c.connect())
    await c.subscribe({ topics: [topic], fromBeginning: true })
    await c.run({
      eachMessage: async ({ partition, message }) => {
        const key = message.key.toString()
        if (!reads.has(key)) reads.set(key, [])
        reads.get(key).push({ member: name, partition, offset: message.offset, message })
      },
    })
    return c
  }
  await startConsumer('a')
  await startConsumer('b')
  await eventually('two members with 2 partitions each', async () => {
    if (problems.length) throw new Fatal(problems.join('; '))
    const a = assigned.a || []
    const b = assigned.b || []
    assert.ok(a.length === 2 && b.length === 2, `member a has ${JSON.stringify(a)}, member b has ${JSON.stringify(b)}`)
    assert.deepEqual([...a, ...b].sort(), [0, 1, 2, 3])
  })

  // Four producers' ways: idempotent with acks -1 (kafkajs requires -1 there), plain with acks 1,
  // each with and without gzip. 250 records each, sent in batches of 50.
  const modes = [
    { name: 'idem-acks-all', idempotent: true, acks: -1 },
    { name: 'idem-acks-all-gzip', idempotent: true, acks: -1, compression: CompressionTypes.GZIP },
    { name: 'acks-1', idempotent: false, acks: 1 },
    { name: 'acks-1-gzip', idempotent: false, acks: 1, compression: CompressionTypes.GZIP },
  ]
  const sent = new Map() // key -> { mode, value, headers }
  const idem = k.producer({ idempotent: true, maxInFlightRequests: 1 })
  const plain = k.producer()
  producers.push(idem, plain)
  await within('producer connect', Promise.all([idem.connect(), plain.connect()]))
  for (const m of modes) {
    const producer = m.idempotent ? idem : plain
    for (let batch = 0; batch < 5; batch++) {
      const messages = []
      for (let i = batch * 50; i < (batch + 1) * 50; i++) {
        const key = `${m.name}-${String(i).padStart(4, '0')}`
        const value = `${m.name} ${i} ${'kairos '.repeat(20)}`
        const headers = { index: String(i), mode: m.name, multi: ['x', 'y'] }
        sent.set(key, { mode: m, value, index: String(i) })
        messages.push({ key, value, headers })
      }
      const res = await within(
        `send ${m.name}`,
        producer.send({ topic, acks: m.acks, compression: m.compression, messages })
      )
      for (const r of res) assert.equal(r.errorCode, 0, `send ${m.name}: ${JSON.stringify(r)}`)
    }
  }
  const n = sent.size
  assert.equal(n, 1000)

  await eventually(`the group read all ${n} records`, async () => {
    if (problems.length) throw new Fatal(problems.join('; '))
    assert.equal(reads.size, n, `read ${reads.size} distinct records`)
  })
  const perMember = { a: new Set(), b: new Set() }
  for (const [key, rs] of reads) {
    assert.equal(rs.length, 1, `record ${key} read ${rs.length} times: ${JSON.stringify(rs.map(r => [r.member, r.partition, r.offset]))}`)
    const [{ member, partition, message }] = rs
    const s = sent.get(key)
    assert.ok(s, `unexpected record ${key}`)
    assert.equal(message.value.toString(), s.value, `${key}: value`)
    const h = message.headers
    assert.equal(h.index.toString(), s.index, `${key}: header index`)
    assert.equal(h.mode.toString(), s.mode.name, `${key}: header mode`)
    assert.deepEqual(h.multi.map(String), ['x', 'y'], `${key}: repeated header`)
    const producerId = message.batchContext.producerId
    if (s.mode.idempotent) assert.notEqual(producerId, '-1', `${key}: idempotent record without a producer id`)
    else assert.equal(producerId, '-1', `${key}: plain record with producer id ${producerId}`)
    assert.ok(Number(message.timestamp) > 0, `${key}: timestamp ${message.timestamp}`)
    assert.ok(assigned[member].includes(partition), `member ${member} read partition ${partition}, assigned ${assigned[member]}`)
    perMember[member].add(partition)
  }
  assert.equal(perMember.a.size, 2, `member a read partitions ${[...perMember.a]}`)
  assert.equal(perMember.b.size, 2, `member b read partitions ${[...perMember.b]}`)

  // Committed offsets reach the end offsets; reads per partition match them.
  const ends = await offsetsOf(admin, topic)
  let total = 0
  for (let p = 0; p < 4; p++) {
    const readHere = [...reads.values()].filter(rs => rs[0].partition === p).length
    assert.equal(String(readHere), ends[p].high, `partition ${p}: read ${readHere}, end offset ${ends[p].high}`)
    assert.ok(readHere > 0, `partition ${p}: no record`)
    total += readHere
  }
  assert.equal(total, n)
  const endOffsets = Object.fromEntries(Object.entries(ends).map(([p, o]) => [p, o.high]))
  await eventually('committed offsets at the end offsets', async () =>
    assert.deepEqual(await committed(admin, groupId, topic), endOffsets)
  )
  for (const c of consumers.splice(0)) await within('consumer disconnect', c.disconnect())

  // A fresh consumer of the same group resumes at the committed offsets: it reads only what is
  // produced after the group stopped.
  const after = new Map()
  const messages = Array.from({ length: 8 }, (_, i) => ({ key: `after-${i}`, value: `after ${i}` }))
  const res = await within('send after', plain.send({ topic, acks: -1, messages }))
  for (const r of res) assert.equal(r.errorCode, 0)
  const fresh = k.consumer({ groupId, heartbeatInterval: 500, maxWaitTimeInMs: 500 })
  consumers.push(fresh)
  await within('fresh consumer connect', fresh.connect())
  await fresh.subscribe({ topics: [topic], fromBeginning: true })
  await fresh.run({
    eachMessage: async ({ partition, message }) => {
      const key = message.key.toString()
      if (!key.startsWith('after-')) problems.push(`fresh consumer read ${key} at ${partition}/${message.offset}: committed offsets not used`)
      if (BigInt(message.offset) < BigInt(endOffsets[partition])) problems.push(`fresh consumer read offset ${message.offset} of partition ${partition}, committed ${endOffsets[partition]}`)
      after.set(key, (after.get(key) || 0) + 1)
    },
  })
  await eventually('the fresh consumer read the 8 new records', async () => {
    if (problems.length) throw new Fatal(problems.join('; '))
    assert.equal(after.size, 8, `read ${[...after.keys()]}`)
  })
  assert.ok([...after.values()].every(c => c === 1), `new records read more than once: ${JSON.stringify([...after])}`)
  assert.equal(problems.length, 0, problems.join('; '))
})
