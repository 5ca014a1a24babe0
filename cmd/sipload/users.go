package main

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// userCred is one user's credentials; domain may be empty (then -domain).
type userCred struct {
	user, password, domain string
}

// patternUsers makes n users named prefix + a zero-padded index (prefix 2,
// n 1000: 20000..20999) whose password is pattern with %s replaced by the
// user name ("pw-%s": pw-20000).
func patternUsers(n int, prefix, pattern string) ([]userCred, error) {
	if n <= 0 {
		return nil, errors.New("-users must be positive")
	}
	if strings.Count(pattern, "%s") != 1 || strings.Count(pattern, "%") != 1 {
		return nil, fmt.Errorf("-password-pattern %q: want exactly one %%s (the user name)", pattern)
	}
	width := len(strconv.Itoa(n - 1))
	if width < 4 {
		width = 4
	}
	out := make([]userCred, n)
	for i := range out {
		name := fmt.Sprintf("%s%0*d", prefix, width, i)
		out[i] = userCred{user: name, password: strings.Replace(pattern, "%s", name, 1)}
	}
	return out, nil
}

// readUsers reads CSV lines user,password[,domain]. Lines starting with # and
// a header line "user,password..." are skipped.
func readUsers(r io.Reader) ([]userCred, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.Comment = '#'
	cr.TrimLeadingSpace = true
	var out []userCred
	for line := 1; ; line++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if len(rec) == 1 && rec[0] == "" {
			continue
		}
		if len(rec) < 2 || len(rec) > 3 {
			return nil, fmt.Errorf("line %d: want user,password[,domain], have %d fields", line, len(rec))
		}
		if line == 1 && strings.EqualFold(rec[0], "user") && strings.EqualFold(rec[1], "password") {
			continue
		}
		u := userCred{user: rec[0], password: rec[1]}
		if len(rec) == 3 {
			u.domain = rec[2]
		}
		if u.user == "" || strings.ContainsAny(u.user+u.domain, " \t\r\n\"<>@;:") {
			return nil, fmt.Errorf("line %d: bad user or domain %q", line, u.user)
		}
		out = append(out, u)
	}
	if len(out) == 0 {
		return nil, errors.New("no users in file")
	}
	return out, nil
}

func readUsersFile(path string) ([]userCred, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	us, err := readUsers(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return us, nil
}
