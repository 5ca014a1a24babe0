package etcdtest

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// TestClusterSurvivesKilledLeader: three members form one cluster (a write
// through one member is read through another), and with its leader killed
// abruptly the other two elect a new one and take writes again.
func TestClusterSurvivesKilledLeader(t *testing.T) {
	c, err := StartCluster(t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	eps := c.Endpoints()
	if len(eps) != 3 {
		t.Fatalf("Endpoints() = %v, want 3", eps)
	}
	client := func(ep ...string) *clientv3.Client {
		cli, err := clientv3.New(clientv3.Config{Endpoints: ep, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		return cli
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := client(eps[0]).Put(ctx, "k", "v1"); err != nil {
		t.Fatal(err)
	}
	if r, err := client(eps[2]).Get(ctx, "k"); err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "v1" {
		t.Fatalf("Get through another member = %v, %v; want v1", r, err)
	}
	leader := c.Leader()
	if leader < 0 {
		t.Fatal("no leader among the members")
	}
	began := time.Now()
	c.Kill(leader)
	t.Logf("killed the leader m%d in %v", leader, time.Since(began))
	l, err := c.WaitLeader(20 * time.Second)
	if err != nil || l == leader {
		t.Fatalf("WaitLeader after the kill = %d, %v; want another member", l, err)
	}
	t.Logf("m%d leads %v after the kill", l, time.Since(began))
	cli := client(eps...)
	if _, err := cli.Put(ctx, "k", "v2"); err != nil {
		t.Fatalf("Put with the leader killed: %v", err)
	}
	if r, err := cli.Get(ctx, "k"); err != nil || string(r.Kvs[0].Value) != "v2" {
		t.Fatalf("Get with the leader killed = %v, %v; want v2", r, err)
	}
}
