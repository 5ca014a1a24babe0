package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// NodeInfo is one dialtone node of a deployment on etcd, as it announced
// itself (AnnounceNode): where the other nodes reach it to send a request
// to a phone whose flow it holds (Binding.Node).
type NodeInfo struct {
	ID        string    `json:"id"`
	SIPAddr   string    `json:"sip_addr"` // host:port of its SIP listener for the other nodes
	StartedAt time.Time `json:"started_at"`
}

// ErrNoNodes means the store is a single node's (bbolt): there are no other
// nodes to announce to or to look up.
var ErrNoNodes = errors.New("store: not a deployment of several nodes (bbolt)")

// NodeID is this node's name on etcd (EtcdConfig.Node); empty on bbolt.
func (db *DB) NodeID() string { return db.node }

// AnnounceNode records this node under its id (nodes/<id> under the
// prefix) for the other nodes to find, on this node's lease: the key
// vanishes a LeaseTTL after the node dies, and is put again on a new lease
// if the node loses its own (etcdlease.go). On bbolt it returns ErrNoNodes;
// while the node has no lease, ErrNoLease.
func (db *DB) AnnounceNode(info NodeInfo) error {
	if db.etcd == nil {
		return ErrNoNodes
	}
	info.ID = db.node
	v, err := json.Marshal(info)
	if err != nil {
		return err
	}
	val := string(v)
	db.etcd.announced.Store(&val)
	id := clientv3.LeaseID(db.etcd.lease.Load())
	if id == 0 {
		return fmt.Errorf("announce node %s: %w", db.node, ErrNoLease)
	}
	ctx, cancel := context.WithTimeout(context.Background(), db.etcd.timeout)
	defer cancel()
	if _, err := db.etcd.cli.Put(ctx, db.etcd.root+"nodes/"+db.node, val, clientv3.WithLease(id)); err != nil {
		return fmt.Errorf("announce node %s: %w", db.node, db.etcd.leaseLostOnPut(err, id))
	}
	return nil
}

// Node returns what the node id announced; ErrNotFound when no such node
// is announced, ErrNoNodes on bbolt.
func (db *DB) Node(id string) (NodeInfo, error) {
	if db.etcd == nil {
		return NodeInfo{}, ErrNoNodes
	}
	ctx, cancel := context.WithTimeout(context.Background(), db.etcd.timeout)
	defer cancel()
	resp, err := db.etcd.cli.Get(ctx, db.etcd.root+"nodes/"+id)
	if err != nil {
		return NodeInfo{}, fmt.Errorf("look up node %s: %w", id, err)
	}
	if len(resp.Kvs) == 0 {
		return NodeInfo{}, ErrNotFound
	}
	var n NodeInfo
	if err := json.Unmarshal(resp.Kvs[0].Value, &n); err != nil {
		return NodeInfo{}, fmt.Errorf("node %s: %w", id, err)
	}
	return n, nil
}

// Nodes lists the announced nodes by id; ErrNoNodes on bbolt.
func (db *DB) Nodes() ([]NodeInfo, error) {
	if db.etcd == nil {
		return nil, ErrNoNodes
	}
	ctx, cancel := context.WithTimeout(context.Background(), db.etcd.timeout)
	defer cancel()
	resp, err := db.etcd.cli.Get(ctx, db.etcd.root+"nodes/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	var out []NodeInfo
	for _, kv := range resp.Kvs {
		var n NodeInfo
		if err := json.Unmarshal(kv.Value, &n); err != nil {
			return nil, fmt.Errorf("node %s: %w", strings.TrimPrefix(string(kv.Key), db.etcd.root+"nodes/"), err)
		}
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}
