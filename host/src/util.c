typedef int lk__placeholder_util;
