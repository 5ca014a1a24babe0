package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// provision creates users on a dialtone admin API and writes their SIP
// credentials as a -users-file CSV (user,password,domain). Existing
// extensions are reused (their credentials are read), so it can be re-run.
func provision(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sipload provision", flag.ContinueOnError)
	fs.SetOutput(stderr)
	admin := fs.String("admin", "http://127.0.0.1:8081", "dialtone admin API base URL")
	account := fs.String("account", "default", "account id")
	n := fs.Int("users", 1000, "number of users")
	prefix := fs.String("user-prefix", "2", "extensions are this prefix + a zero-padded index (as in sipload's -user-prefix)")
	parallel := fs.Int("parallel", 16, "requests in flight")
	out := fs.String("out", "users.csv", "CSV file to write (mode 0600: it holds passwords)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	token := os.Getenv("SIPLOAD_TOKEN")
	if token == "" {
		return errors.New("set SIPLOAD_TOKEN to an admin API token (not a flag, so it stays out of process listings)")
	}
	users, err := patternUsers(*n, *prefix, "%s")
	if err != nil {
		return err
	}
	base := strings.TrimRight(*admin, "/") + "/api/v1/accounts/" + *account
	cl := &client{http: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: *parallel}}, token: token}

	existing := map[string]string{} // extension → id
	var list struct {
		Users []struct{ ID, Extension string }
	}
	if err := cl.do(ctx, "GET", base+"/users", nil, &list, http.StatusOK); err != nil {
		return err
	}
	for _, u := range list.Users {
		existing[u.Extension] = u.ID
	}

	t0 := time.Now()
	creds := make([]userCred, len(users))
	jobs := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for w := 0; w < *parallel; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				ext := users[i].user
				id := existing[ext]
				var err error
				if id == "" {
					var created struct{ ID string }
					err = cl.do(ctx, "POST", base+"/users", map[string]string{"extension": ext, "name": "Load " + ext}, &created, http.StatusCreated)
					id = created.ID
				}
				var c struct{ Username, Password, Domain string }
				if err == nil {
					err = cl.do(ctx, "GET", base+"/users/"+id+"/sip-credentials", nil, &c, http.StatusOK)
				}
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = fmt.Errorf("user %s: %w", ext, err)
				}
				creds[i] = userCred{user: c.Username, password: c.Password, domain: c.Domain}
				mu.Unlock()
			}
		}()
	}
	for i := range users {
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed || ctx.Err() != nil {
			break
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	w.Write([]string{"user", "password", "domain"})
	for _, c := range creds {
		w.Write([]string{c.user, c.password, c.domain})
	}
	w.Flush()
	if err := os.WriteFile(*out, buf.Bytes(), 0o600); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "provisioned %d users (%d already existed) in %.1f s → %s\n", len(users), len(existing), time.Since(t0).Seconds(), *out)
	return nil
}

type client struct {
	http  *http.Client
	token string
}

func (c *client) do(ctx context.Context, method, url string, in, out any, want int) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return err
	}
	if res.StatusCode != want {
		msg := string(data)
		if len(msg) > 300 {
			msg = msg[:300]
		}
		return fmt.Errorf("%s %s: %s: %s", method, req.URL.Path, res.Status, msg)
	}
	return json.Unmarshal(data, out)
}
