typedef int lk__placeholder_cmd_list;
