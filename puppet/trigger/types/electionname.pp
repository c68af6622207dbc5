# @summary The name of an election (a lock), such as `db master`.
#
# The name is also the name of the file `trigger::election` drops into
# CONFIG_DIR/elections/, which the watcher reads back as it is (no
# decoding). So it is limited to what is a safe file name and a safe
# command-line word everywhere: ASCII letters, digits, spaces and `_ . : @ + = -`,
# starting and ending with a letter, digit or `_`, at most 200 characters.
# No `/`, no leading `.` (the watcher skips dot files), no `,` (the watcher's
# `--elections` list is comma-separated), no `%` (kept free for a
# percent-encoding, should wider names ever be needed).
type Trigger::Electionname = Pattern[/\A[A-Za-z0-9_](?:[A-Za-z0-9_ .:@+=-]{0,198}[A-Za-z0-9_])?\z/]
