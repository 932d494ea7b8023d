// Client compatibility tests with franz-go (kgo, kadm): what a Go user of a Kafka client does
// against the broker named by KAIROS_BOOTSTRAP (host:port[,host:port...]).
//
// Run (from tests/go):
//
//	KAIROS_BOOTSTRAP=127.0.0.1:9092 go test ./...
//
// add -v to see each step. Every test uses topics and groups with a random suffix and deletes them
// at the end, so reruns against a long-lived broker work. Nothing is skipped: without
// KAIROS_BOOTSTRAP every test fails.
package clienttests

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// wait bounds every single step (a request, a poll loop, an "eventually" check).
const wait = 30 * time.Second

func seeds(t *testing.T) []string {
	t.Helper()
	v := strings.TrimSpace(os.Getenv("KAIROS_BOOTSTRAP"))
	if v == "" {
		t.Fatal("KAIROS_BOOTSTRAP is not set: set it to the broker's host:port (e.g. KAIROS_BOOTSTRAP=127.0.0.1:9092 go test ./...)")
	}
	return strings.Split(v, ",")
}

// unique returns prefix-<random hex>, so reruns against the same broker never collide.
func unique(prefix string) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return prefix + "-" + hex.EncodeToString(b)
}

func step(t *testing.T) (context.Context, context.CancelFunc) {
	t.Helper()
	return context.WithTimeout(context.Background(), wait)
}

func newClient(t *testing.T, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	opts = append([]kgo.Opt{kgo.SeedBrokers(seeds(t)...), kgo.ClientID("kairos-clienttests-go")}, opts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatalf("kgo.NewClient: %v", err)
	}
	return cl
}

func newAdmin(t *testing.T) *kadm.Client {
	t.Helper()
	adm := kadm.NewClient(newClient(t))
	t.Cleanup(adm.Close)
	return adm
}

// eventually retries fn every 200 ms until it returns nil, failing the test with fn's last error
// after 30 s (metadata and group state may take a moment to settle on a multi-broker cluster).
func eventually(t *testing.T, what string, fn func(ctx context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(wait)
	var err error
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = fn(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %v: %v", what, wait, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func str(s string) *string { return &s }

func createTopic(t *testing.T, adm *kadm.Client, topic string, partitions int32, configs map[string]*string) {
	t.Helper()
	ctx, cancel := step(t)
	defer cancel()
	// Replication factor -1: the broker's default.replication.factor.
	resp, err := adm.CreateTopic(ctx, partitions, -1, configs, topic)
	if err != nil {
		t.Fatalf("CreateTopic %s: %v (%s)", topic, err, resp.ErrMessage)
	}
	if resp.NumPartitions != partitions {
		t.Fatalf("CreateTopic %s: response says %d partitions, want %d", topic, resp.NumPartitions, partitions)
	}
	// Wait until every partition has a leader in the metadata.
	waitTopic(t, adm, topic, int(partitions))
}

func waitTopic(t *testing.T, adm *kadm.Client, topic string, partitions int) {
	t.Helper()
	eventually(t, "metadata for "+topic, func(ctx context.Context) error {
		tds, err := adm.ListTopics(ctx, topic)
		if err != nil {
			return err
		}
		td, ok := tds[topic]
		if !ok {
			return fmt.Errorf("topic %s missing from metadata", topic)
		}
		if td.Err != nil {
			return fmt.Errorf("topic %s: %w", topic, td.Err)
		}
		if len(td.Partitions) != partitions {
			return fmt.Errorf("topic %s has %d partitions, want %d", topic, len(td.Partitions), partitions)
		}
		for _, p := range td.Partitions {
			if p.Err != nil || p.Leader < 0 {
				return fmt.Errorf("topic %s partition %d: leader %d, err %v", topic, p.Partition, p.Leader, p.Err)
			}
		}
		return nil
	})
}

// cleanup deletes topics and groups at the end of a test; failures are logged only, the tests that
// own DeleteTopics and DeleteGroups check them.
func cleanup(t *testing.T, topics []string, groups []string) {
	t.Cleanup(func() {
		cl, err := kgo.NewClient(kgo.SeedBrokers(seeds(t)...))
		if err != nil {
			t.Logf("cleanup: %v", err)
			return
		}
		adm := kadm.NewClient(cl)
		defer adm.Close()
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if len(groups) > 0 {
			if rs, err := adm.DeleteGroups(ctx, groups...); err != nil {
				t.Logf("cleanup: DeleteGroups %v: %v", groups, err)
			} else if err := rs.Error(); err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
				t.Logf("cleanup: DeleteGroups %v: %v", groups, err)
			}
		}
		if len(topics) > 0 {
			if rs, err := adm.DeleteTopics(ctx, topics...); err != nil {
				t.Logf("cleanup: DeleteTopics %v: %v", topics, err)
			} else if err := rs.Error(); err != nil && !errors.Is(err, kerr.UnknownTopicOrPartition) {
				t.Logf("cleanup: DeleteTopics %v: %v", topics, err)
			}
		}
	})
}

func configOf(t *testing.T, adm *kadm.Client, topic, key string) kadm.Config {
	t.Helper()
	ctx, cancel := step(t)
	defer cancel()
	rcs, err := adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		t.Fatalf("DescribeTopicConfigs %s: %v", topic, err)
	}
	rc, err := rcs.On(topic, nil)
	if err != nil {
		t.Fatalf("DescribeTopicConfigs %s: no entry for the topic: %v", topic, err)
	}
	if rc.Err != nil {
		t.Fatalf("DescribeTopicConfigs %s: %v (%s)", topic, rc.Err, rc.ErrMessage)
	}
	for _, c := range rc.Configs {
		if c.Key == key {
			return c
		}
	}
	t.Fatalf("DescribeTopicConfigs %s: no %s among %d configs", topic, key, len(rc.Configs))
	return kadm.Config{}
}

// TestAdmin walks kadm through a topic's and a group's life: create with a config, list, describe
// and alter configs, add partitions, offsets, delete records, cluster, groups, commit/fetch
// offsets, delete group, delete topic.
func TestAdmin(t *testing.T) {
	adm := newAdmin(t)
	topic, group := unique("go-admin"), unique("go-admin-group")
	cleanup(t, []string{topic}, []string{group})

	// Create with 3 partitions and retention.ms.
	createTopic(t, adm, topic, 3, map[string]*string{"retention.ms": str("3600000")})

	// List: all topics (the new one is there, not internal) and the topic alone.
	eventually(t, "ListTopics (all)", func(ctx context.Context) error {
		tds, err := adm.ListTopics(ctx)
		if err != nil {
			return err
		}
		td, ok := tds[topic]
		if !ok {
			return fmt.Errorf("%s not among %d listed topics", topic, len(tds))
		}
		if td.IsInternal {
			return fmt.Errorf("%s listed as internal", topic)
		}
		if td.ID == (kadm.TopicID{}) {
			return fmt.Errorf("%s has no topic ID", topic)
		}
		return nil
	})

	// Describe and alter configs (incremental).
	c := configOf(t, adm, topic, "retention.ms")
	if c.MaybeValue() != "3600000" || c.Source != kmsg.ConfigSourceDynamicTopicConfig {
		t.Fatalf("retention.ms after create: value %q source %v, want 3600000 from DYNAMIC_TOPIC_CONFIG", c.MaybeValue(), c.Source)
	}
	func() {
		ctx, cancel := step(t)
		defer cancel()
		rs, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{
			{Op: kadm.SetConfig, Name: "retention.ms", Value: str("7200000")},
			{Op: kadm.SetConfig, Name: "max.message.bytes", Value: str("2097152")},
		}, topic)
		if err != nil {
			t.Fatalf("AlterTopicConfigs (set): %v", err)
		}
		if r, err := rs.On(topic, nil); err != nil || r.Err != nil {
			t.Fatalf("AlterTopicConfigs (set) %s: %v %v (%s)", topic, err, r.Err, r.ErrMessage)
		}
	}()
	eventually(t, "altered configs visible", func(ctx context.Context) error {
		rcs, err := adm.DescribeTopicConfigs(ctx, topic)
		if err != nil {
			return err
		}
		if len(rcs) != 1 || rcs[0].Err != nil {
			return fmt.Errorf("DescribeTopicConfigs %s: %+v", topic, rcs)
		}
		got := map[string]string{}
		for _, c := range rcs[0].Configs {
			got[c.Key] = c.MaybeValue()
		}
		if got["retention.ms"] != "7200000" || got["max.message.bytes"] != "2097152" {
			return fmt.Errorf("retention.ms=%q max.message.bytes=%q, want 7200000 and 2097152", got["retention.ms"], got["max.message.bytes"])
		}
		return nil
	})
	func() {
		ctx, cancel := step(t)
		defer cancel()
		rs, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.DeleteConfig, Name: "max.message.bytes"}}, topic)
		if err != nil {
			t.Fatalf("AlterTopicConfigs (delete): %v", err)
		}
		if r, err := rs.On(topic, nil); err != nil || r.Err != nil {
			t.Fatalf("AlterTopicConfigs (delete) %s: %v %v (%s)", topic, err, r.Err, r.ErrMessage)
		}
	}()
	eventually(t, "deleted config back to its default", func(ctx context.Context) error {
		rcs, err := adm.DescribeTopicConfigs(ctx, topic)
		if err != nil {
			return err
		}
		if len(rcs) != 1 || rcs[0].Err != nil {
			return fmt.Errorf("DescribeTopicConfigs %s: %+v", topic, rcs)
		}
		for _, c := range rcs[0].Configs {
			switch c.Key {
			case "max.message.bytes":
				if c.Source == kmsg.ConfigSourceDynamicTopicConfig {
					return fmt.Errorf("max.message.bytes still a topic override (%q)", c.MaybeValue())
				}
			case "retention.ms":
				if c.MaybeValue() != "7200000" {
					return fmt.Errorf("retention.ms %q, want 7200000 (deleting one key must keep the others)", c.MaybeValue())
				}
			}
		}
		return nil
	})

	// Create partitions: 3 -> 4.
	func() {
		ctx, cancel := step(t)
		defer cancel()
		rs, err := adm.CreatePartitions(ctx, 1, topic)
		if err != nil {
			t.Fatalf("CreatePartitions: %v", err)
		}
		if r, err := rs.On(topic, nil); err != nil || r.Err != nil {
			t.Fatalf("CreatePartitions %s: %v %v (%s)", topic, err, r.Err, r.ErrMessage)
		}
	}()
	waitTopic(t, adm, topic, 4)

	// 10 records into each of the 4 partitions.
	const perPartition = 10
	prod := newClient(t, kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	defer prod.Close()
	func() {
		ctx, cancel := step(t)
		defer cancel()
		var rs []*kgo.Record
		for p := int32(0); p < 4; p++ {
			for i := 0; i < perPartition; i++ {
				rs = append(rs, &kgo.Record{Partition: p, Key: []byte(fmt.Sprintf("k%d-%d", p, i)), Value: []byte("v")})
			}
		}
		if err := prod.ProduceSync(ctx, rs...).FirstErr(); err != nil {
			t.Fatalf("produce: %v", err)
		}
	}()

	// End and start offsets.
	listed := func(name string, f func(context.Context, ...string) (kadm.ListedOffsets, error)) map[int32]int64 {
		t.Helper()
		ctx, cancel := step(t)
		defer cancel()
		los, err := f(ctx, topic)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := los.Error(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got := map[int32]int64{}
		los.Each(func(o kadm.ListedOffset) { got[o.Partition] = o.Offset })
		return got
	}
	wantOffsets := func(name string, got map[int32]int64, want map[int32]int64) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: got %v, want %v", name, got, want)
		}
	}
	wantOffsets("ListEndOffsets", listed("ListEndOffsets", adm.ListEndOffsets), map[int32]int64{0: 10, 1: 10, 2: 10, 3: 10})
	wantOffsets("ListStartOffsets", listed("ListStartOffsets", adm.ListStartOffsets), map[int32]int64{0: 0, 1: 0, 2: 0, 3: 0})

	// Delete records before offset 4 of partition 0.
	func() {
		ctx, cancel := step(t)
		defer cancel()
		var offs kadm.Offsets
		offs.AddOffset(topic, 0, 4, -1)
		rs, err := adm.DeleteRecords(ctx, offs)
		if err != nil {
			t.Fatalf("DeleteRecords: %v", err)
		}
		r, err := rs.On(topic, 0, nil)
		if err != nil || r.Err != nil {
			t.Fatalf("DeleteRecords %s/0: %v %v", topic, err, r.Err)
		}
		if r.LowWatermark != 4 {
			t.Fatalf("DeleteRecords %s/0: low watermark %d, want 4", topic, r.LowWatermark)
		}
	}()
	wantOffsets("ListStartOffsets after DeleteRecords", listed("ListStartOffsets", adm.ListStartOffsets), map[int32]int64{0: 4, 1: 0, 2: 0, 3: 0})
	wantOffsets("ListEndOffsets after DeleteRecords", listed("ListEndOffsets", adm.ListEndOffsets), map[int32]int64{0: 10, 1: 10, 2: 10, 3: 10})

	// Describe the cluster.
	func() {
		ctx, cancel := step(t)
		defer cancel()
		m, err := adm.BrokerMetadata(ctx)
		if err != nil {
			t.Fatalf("BrokerMetadata: %v", err)
		}
		if len(m.Brokers) == 0 {
			t.Fatal("BrokerMetadata: no brokers")
		}
		ids := map[int32]bool{}
		for _, b := range m.Brokers {
			if b.Host == "" || b.Port <= 0 || ids[b.NodeID] {
				t.Fatalf("BrokerMetadata: bad or duplicate broker %+v among %+v", b, m.Brokers)
			}
			ids[b.NodeID] = true
		}
		if m.Cluster == "" {
			t.Fatal("BrokerMetadata: empty cluster ID")
		}
		t.Logf("cluster %s: %d broker(s) %v, controller %d", m.Cluster, len(m.Brokers), m.Brokers.NodeIDs(), m.Controller)
	}()

	// A consumer group member reads everything left (36 records) and commits.
	member := newClient(t,
		kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic), kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(time.Second))
	memberClosed := false
	defer func() {
		if !memberClosed {
			member.Close()
		}
	}()
	func() {
		ctx, cancel := step(t)
		defer cancel()
		n := 0
		for n < 36 {
			fs := member.PollFetches(ctx)
			if err := ctx.Err(); err != nil {
				t.Fatalf("group member read %d of 36 records in %v", n, wait)
			}
			fs.EachError(func(tp string, p int32, err error) { t.Fatalf("poll %s/%d: %v", tp, p, err) })
			n += fs.NumRecords()
		}
		if n != 36 {
			t.Fatalf("group member read %d records, want 36", n)
		}
		if err := member.CommitUncommittedOffsets(ctx); err != nil {
			t.Fatalf("CommitUncommittedOffsets: %v", err)
		}
	}()

	// List and describe the group while its member is in it.
	eventually(t, "ListGroups shows the group", func(ctx context.Context) error {
		lgs, err := adm.ListGroups(ctx)
		if err != nil {
			return err
		}
		g, ok := lgs[group]
		if !ok {
			return fmt.Errorf("%s not among %d listed groups", group, len(lgs))
		}
		if g.ProtocolType != "consumer" {
			return fmt.Errorf("%s protocol type %q, want consumer", group, g.ProtocolType)
		}
		return nil
	})
	eventually(t, "DescribeGroups with one member", func(ctx context.Context) error {
		dgs, err := adm.DescribeGroups(ctx, group)
		if err != nil {
			return err
		}
		g, err := dgs.On(group, nil)
		if err != nil {
			return err
		}
		if g.Err != nil {
			return fmt.Errorf("describe %s: %w (%s)", group, g.Err, g.ErrMessage)
		}
		if g.State != "Stable" || g.ProtocolType != "consumer" || len(g.Members) != 1 {
			return fmt.Errorf("group %s: state %q protocol type %q, %d member(s); want Stable, consumer, 1", group, g.State, g.ProtocolType, len(g.Members))
		}
		assigned := g.AssignedPartitions()
		if got := assigned.Sorted(); len(got) != 1 || got[0].Topic != topic || len(got[0].Partitions) != 4 {
			return fmt.Errorf("group %s assignment %v, want the 4 partitions of %s", group, got, topic)
		}
		return nil
	})

	// Fetch the committed offsets (the member's), then commit others through the admin client.
	fetchOffsets := func() map[int32]int64 {
		t.Helper()
		ctx, cancel := step(t)
		defer cancel()
		ors, err := adm.FetchOffsets(ctx, group)
		if err != nil {
			t.Fatalf("FetchOffsets %s: %v", group, err)
		}
		if err := ors.Error(); err != nil {
			t.Fatalf("FetchOffsets %s: %v", group, err)
		}
		got := map[int32]int64{}
		ors.Each(func(o kadm.OffsetResponse) {
			if o.Topic == topic {
				got[o.Partition] = o.At
			}
		})
		return got
	}
	wantOffsets("FetchOffsets after the member's commit", fetchOffsets(), map[int32]int64{0: 10, 1: 10, 2: 10, 3: 10})

	member.Close() // leaves the group
	memberClosed = true
	eventually(t, "group empty after its member left", func(ctx context.Context) error {
		dgs, err := adm.DescribeGroups(ctx, group)
		if err != nil {
			return err
		}
		if g := dgs[group]; g.State != "Empty" || len(g.Members) != 0 {
			return fmt.Errorf("group %s: state %q, %d member(s); want Empty, 0", group, g.State, len(g.Members))
		}
		return nil
	})
	func() {
		ctx, cancel := step(t)
		defer cancel()
		var offs kadm.Offsets
		offs.Add(kadm.Offset{Topic: topic, Partition: 1, At: 5, LeaderEpoch: -1, Metadata: "set by kadm"})
		offs.Add(kadm.Offset{Topic: topic, Partition: 3, At: 0, LeaderEpoch: -1})
		rs, err := adm.CommitOffsets(ctx, group, offs)
		if err != nil {
			t.Fatalf("CommitOffsets: %v", err)
		}
		if err := rs.Error(); err != nil {
			t.Fatalf("CommitOffsets: %v", err)
		}
	}()
	wantOffsets("FetchOffsets after CommitOffsets", fetchOffsets(), map[int32]int64{0: 10, 1: 5, 2: 10, 3: 0})
	func() {
		ctx, cancel := step(t)
		defer cancel()
		ors, err := adm.FetchOffsets(ctx, group)
		if err != nil {
			t.Fatalf("FetchOffsets: %v", err)
		}
		if o, ok := ors.Lookup(topic, 1); !ok || o.Metadata != "set by kadm" {
			t.Fatalf("FetchOffsets %s/1: metadata %q (found %v), want %q", topic, o.Metadata, ok, "set by kadm")
		}
	}()

	// Delete the group.
	func() {
		ctx, cancel := step(t)
		defer cancel()
		rs, err := adm.DeleteGroups(ctx, group)
		if err != nil {
			t.Fatalf("DeleteGroups: %v", err)
		}
		if r, err := rs.On(group, nil); err != nil || r.Err != nil {
			t.Fatalf("DeleteGroups %s: %v %v (%s)", group, err, r.Err, r.ErrMessage)
		}
	}()
	eventually(t, "deleted group gone", func(ctx context.Context) error {
		lgs, err := adm.ListGroups(ctx)
		if err != nil {
			return err
		}
		if _, ok := lgs[group]; ok {
			return fmt.Errorf("%s still listed", group)
		}
		return nil
	})
	if got := fetchOffsets(); len(got) != 0 {
		t.Fatalf("FetchOffsets after DeleteGroups: %v, want none", got)
	}

	// Delete the topic.
	func() {
		ctx, cancel := step(t)
		defer cancel()
		rs, err := adm.DeleteTopics(ctx, topic)
		if err != nil {
			t.Fatalf("DeleteTopics: %v", err)
		}
		if r, err := rs.On(topic, nil); err != nil || r.Err != nil {
			t.Fatalf("DeleteTopics %s: %v %v (%s)", topic, err, r.Err, r.ErrMessage)
		}
	}()
	eventually(t, "deleted topic gone", func(ctx context.Context) error {
		tds, err := adm.ListTopics(ctx)
		if err != nil {
			return err
		}
		if tds.Has(topic) {
			return fmt.Errorf("%s still listed", topic)
		}
		return nil
	})
}

// batchCodecs records the compression codec of every batch produced and fetched.
type batchCodecs struct {
	mu       sync.Mutex
	produced map[uint8]int
	fetched  map[uint8]int
}

func newBatchCodecs() *batchCodecs {
	return &batchCodecs{produced: map[uint8]int{}, fetched: map[uint8]int{}}
}

func (b *batchCodecs) OnProduceBatchWritten(_ kgo.BrokerMetadata, _ string, _ int32, m kgo.ProduceBatchMetrics) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.produced[m.CompressionType]++
}

func (b *batchCodecs) OnFetchBatchRead(_ kgo.BrokerMetadata, _ string, _ int32, m kgo.FetchBatchMetrics) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fetched[m.CompressionType]++
}

type sent struct {
	partition int32
	offset    int64
	value     string
	index     string
}

// groupMember is one consumer of the group, with its current assignment (cooperative: assigned
// and revoked partitions come in increments).
type groupMember struct {
	name     string
	cl       *kgo.Client
	mu       sync.Mutex
	assigned map[int32]bool
	read     map[int32]int // records read per partition
}

func (m *groupMember) partitions() []int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ps []int32
	for p := range m.assigned {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
	return ps
}

func startMember(t *testing.T, name, group, topic string, hooks ...kgo.Hook) *groupMember {
	m := &groupMember{name: name, assigned: map[int32]bool{}, read: map[int32]int{}}
	change := func(add bool) func(context.Context, *kgo.Client, map[string][]int32) {
		return func(_ context.Context, _ *kgo.Client, tps map[string][]int32) {
			m.mu.Lock()
			defer m.mu.Unlock()
			for _, p := range tps[topic] {
				if add {
					m.assigned[p] = true
				} else {
					delete(m.assigned, p)
				}
			}
		}
	}
	opts := []kgo.Opt{
		kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// Commit by hand after each poll, and no rebalance between a poll and its commit: with this a
		// partition that moves is picked up by its next owner exactly where the last one stopped.
		kgo.DisableAutoCommit(), kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsAssigned(change(true)), kgo.OnPartitionsRevoked(change(false)), kgo.OnPartitionsLost(change(false)),
		kgo.HeartbeatInterval(500 * time.Millisecond), kgo.FetchMaxWait(time.Second),
		kgo.ClientID("kairos-clienttests-go-" + name),
	}
	if len(hooks) > 0 {
		opts = append(opts, kgo.WithHooks(hooks...))
	}
	m.cl = newClient(t, opts...)
	return m
}

// TestProduceConsumeCompression produces 1000 records (keys, headers, values) with acks=all and
// idempotence for each compression codec, on its own 4-partition topic, and reads them back with a
// group of two members (2 partitions each): every record exactly once, committed offsets at the end
// offsets; then a fresh client of the same group resumes from those offsets.
func TestProduceConsumeCompression(t *testing.T) {
	codecs := []struct {
		name  string
		codec kgo.CompressionCodec
		typ   uint8 // the batch attribute's compression type
	}{
		{"none", kgo.NoCompression(), 0},
		{"gzip", kgo.GzipCompression(), 1},
		{"snappy", kgo.SnappyCompression(), 2},
		{"lz4", kgo.Lz4Compression(), 3},
		{"zstd", kgo.ZstdCompression(), 4},
	}
	for _, c := range codecs {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			produceConsume(t, c.name, c.codec, c.typ)
		})
	}
}

func produceConsume(t *testing.T, name string, codec kgo.CompressionCodec, typ uint8) {
	const n = 1000
	adm := newAdmin(t)
	topic, group := unique("go-"+name), unique("go-group-"+name)
	cleanup(t, []string{topic}, []string{group})
	createTopic(t, adm, topic, 4, nil)

	// Produce: acks=all, idempotent (franz-go's default, asserted through the producer ID below).
	prodCodecs := newBatchCodecs()
	prod := newClient(t, kgo.DefaultProduceTopic(topic), kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerBatchCompression(codec), kgo.WithHooks(prodCodecs))
	defer prod.Close()
	want := map[string]sent{} // by key
	endOffsets := map[int32]int64{}
	produce := func(prefix string, count int) map[string]sent {
		t.Helper()
		ctx, cancel := step(t)
		defer cancel()
		var mu sync.Mutex
		var firstErr error
		got := map[string]sent{}
		for i := 0; i < count; i++ {
			idx := strconv.Itoa(i)
			r := &kgo.Record{
				Key:   []byte(fmt.Sprintf("%s-%04d", prefix, i)),
				Value: []byte(fmt.Sprintf("%s %s %04d %s", name, prefix, i, strings.Repeat("kairos ", 20))),
				Headers: []kgo.RecordHeader{
					{Key: "index", Value: []byte(idx)},
					{Key: "codec", Value: []byte(name)},
					{Key: "empty", Value: nil},
				},
			}
			prod.Produce(ctx, r, func(r *kgo.Record, err error) {
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					if firstErr == nil {
						firstErr = fmt.Errorf("record %s: %w", r.Key, err)
					}
					return
				}
				got[string(r.Key)] = sent{partition: r.Partition, offset: r.Offset, value: string(r.Value), index: idx}
			})
		}
		if err := prod.Flush(ctx); err != nil {
			t.Fatalf("flush: %v", err)
		}
		mu.Lock()
		defer mu.Unlock()
		if firstErr != nil {
			t.Fatalf("produce: %v", firstErr)
		}
		if len(got) != count {
			t.Fatalf("produce: %d records acknowledged, want %d", len(got), count)
		}
		return got
	}
	for k, s := range produce("key", n) {
		want[k] = s
		if s.offset+1 > endOffsets[s.partition] {
			endOffsets[s.partition] = s.offset + 1
		}
	}
	perPartition := map[int32]int{}
	for _, s := range want {
		perPartition[s.partition]++
	}
	for p := int32(0); p < 4; p++ {
		if perPartition[p] == 0 || int64(perPartition[p]) != endOffsets[p] {
			t.Fatalf("partition %d: %d records, offsets up to %d; want >0 records at offsets 0..n-1 (all %v)", p, perPartition[p], endOffsets[p], perPartition)
		}
	}
	pid, epoch, err := func() (int64, int16, error) {
		ctx, cancel := step(t)
		defer cancel()
		return prod.ProducerID(ctx)
	}()
	if err != nil || pid < 0 {
		t.Fatalf("idempotent producer: producer ID %d epoch %d, err %v", pid, epoch, err)
	}
	prodCodecs.mu.Lock()
	if len(prodCodecs.produced) != 1 || prodCodecs.produced[typ] == 0 {
		t.Fatalf("produced batches by compression type: %v, want all of type %d (%s)", prodCodecs.produced, typ, name)
	}
	prodCodecs.mu.Unlock()

	ctxEnd, cancelEnd := step(t)
	los, err := adm.ListEndOffsets(ctxEnd, topic)
	cancelEnd()
	if err != nil || los.Error() != nil {
		t.Fatalf("ListEndOffsets: %v %v", err, los.Error())
	}
	los.Each(func(o kadm.ListedOffset) {
		if o.Offset != endOffsets[o.Partition] {
			t.Errorf("ListEndOffsets %s/%d = %d, want %d (acknowledged records)", topic, o.Partition, o.Offset, endOffsets[o.Partition])
		}
	})

	// Two members in one process; wait until they share the 4 partitions 2 and 2 before reading,
	// so that both read.
	fetchCodecs := newBatchCodecs()
	a := startMember(t, "a", group, topic, fetchCodecs)
	b := startMember(t, "b", group, topic, fetchCodecs)
	members := []*groupMember{a, b}
	defer func() {
		for _, m := range members {
			m.cl.Close()
		}
	}()
	eventually(t, "two members with 2 partitions each", func(context.Context) error {
		pa, pb := a.partitions(), b.partitions()
		if len(pa) != 2 || len(pb) != 2 {
			return fmt.Errorf("member a has %v, member b has %v", pa, pb)
		}
		return nil
	})

	var mu sync.Mutex
	got := map[string]int{} // reads per key
	var problems []string
	pollCtx, stopPolls := context.WithTimeout(context.Background(), wait)
	defer stopPolls()
	var wg sync.WaitGroup
	for _, m := range members {
		wg.Add(1)
		go func(m *groupMember) {
			defer wg.Done()
			for pollCtx.Err() == nil {
				fs := m.cl.PollFetches(pollCtx)
				var bad []string
				fs.EachError(func(tp string, p int32, err error) {
					if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
						bad = append(bad, fmt.Sprintf("member %s poll %s/%d: %v", m.name, tp, p, err))
					}
				})
				mu.Lock()
				problems = append(problems, bad...)
				fs.EachRecord(func(r *kgo.Record) {
					k := string(r.Key)
					got[k]++
					m.mu.Lock()
					m.read[r.Partition]++
					m.mu.Unlock()
					s, ok := want[k]
					switch {
					case !ok:
						problems = append(problems, fmt.Sprintf("unexpected record key %q", k))
					case r.Partition != s.partition || r.Offset != s.offset:
						problems = append(problems, fmt.Sprintf("%s at %d/%d, produced at %d/%d", k, r.Partition, r.Offset, s.partition, s.offset))
					case string(r.Value) != s.value:
						problems = append(problems, fmt.Sprintf("%s: value %q, want %q", k, r.Value, s.value))
					case len(r.Headers) != 3 || r.Headers[0].Key != "index" || string(r.Headers[0].Value) != s.index ||
						r.Headers[1].Key != "codec" || string(r.Headers[1].Value) != name ||
						r.Headers[2].Key != "empty" || len(r.Headers[2].Value) != 0:
						problems = append(problems, fmt.Sprintf("%s: headers %+v", k, r.Headers))
					case r.ProducerID != pid:
						problems = append(problems, fmt.Sprintf("%s: producer ID %d, want %d (idempotent)", k, r.ProducerID, pid))
					case r.Timestamp.IsZero():
						problems = append(problems, fmt.Sprintf("%s: no timestamp", k))
					}
				})
				mu.Unlock()
				if fs.NumRecords() > 0 {
					ctx, cancel := step(t)
					if err := m.cl.CommitUncommittedOffsets(ctx); err != nil {
						mu.Lock()
						problems = append(problems, fmt.Sprintf("member %s commit: %v", m.name, err))
						mu.Unlock()
					}
					cancel()
				}
				m.cl.AllowRebalance()
				mu.Lock()
				done := len(got) >= n || len(problems) > 0
				mu.Unlock()
				if done {
					stopPolls()
				}
			}
		}(m)
	}
	wg.Wait()
	mu.Lock()
	if len(problems) > 0 {
		t.Fatalf("%d problem(s) reading back, first ones: %v", len(problems), problems[:min(len(problems), 10)])
	}
	if len(got) != n {
		t.Fatalf("group read %d distinct records of %d in %v", len(got), n, wait)
	}
	for k, c := range got {
		if c != 1 {
			t.Errorf("record %s read %d times", k, c)
		}
	}
	mu.Unlock()
	for _, m := range members {
		m.mu.Lock()
		total := 0
		for p, c := range m.read {
			total += c
			if !m.assigned[p] {
				t.Errorf("member %s read partition %d, not among its assigned %v", m.name, p, m.assigned)
			}
		}
		if total == 0 {
			t.Errorf("member %s read nothing", m.name)
		}
		t.Logf("member %s: partitions %v, records per partition %v", m.name, m.assigned, m.read)
		m.mu.Unlock()
	}
	fetchCodecs.mu.Lock()
	if len(fetchCodecs.fetched) != 1 || fetchCodecs.fetched[typ] == 0 {
		t.Errorf("fetched batches by compression type: %v, want all of type %d (%s): the broker must keep the producer's compression", fetchCodecs.fetched, typ, name)
	}
	fetchCodecs.mu.Unlock()

	// Committed offsets are the end offsets.
	func() {
		ctx, cancel := step(t)
		defer cancel()
		ors, err := adm.FetchOffsets(ctx, group)
		if err != nil || ors.Error() != nil {
			t.Fatalf("FetchOffsets %s: %v %v", group, err, ors.Error())
		}
		for p := int32(0); p < 4; p++ {
			o, ok := ors.Lookup(topic, p)
			if !ok || o.At != endOffsets[p] {
				t.Errorf("committed offset of %s/%d: %d (found %v), want %d", topic, p, o.At, ok, endOffsets[p])
			}
		}
	}()
	if t.Failed() {
		return
	}
	for _, m := range members {
		m.cl.Close()
	}
	members = nil

	// A fresh member of the same group resumes at the committed offsets: it reads only records
	// produced after the group stopped.
	after := produce("after", 8)
	c := startMember(t, "c", group, topic)
	defer c.cl.Close()
	ctx, cancel := step(t)
	defer cancel()
	gotAfter := map[string]bool{}
	for len(gotAfter) < len(after) {
		fs := c.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("fresh member read %d of the %d new records in %v", len(gotAfter), len(after), wait)
		}
		fs.EachError(func(tp string, p int32, err error) { t.Fatalf("fresh member poll %s/%d: %v", tp, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			k := string(r.Key)
			s, ok := after[k]
			if !ok {
				t.Fatalf("fresh member read %s at %d/%d: not one of the new records (committed offsets not used)", k, r.Partition, r.Offset)
			}
			if gotAfter[k] || r.Offset != s.offset || r.Offset < endOffsets[r.Partition] {
				t.Fatalf("fresh member read %s at %d/%d (again: %v), produced at %d, committed %d", k, r.Partition, r.Offset, gotAfter[k], s.offset, endOffsets[r.Partition])
			}
			gotAfter[k] = true
		})
		c.cl.AllowRebalance()
	}
}
