# @summary An absolute path without spaces or shell syntax (for executables).
type Trigger::Absolutepath = Pattern[/\A(\/[A-Za-z0-9_.+\-]+)+\z/]
