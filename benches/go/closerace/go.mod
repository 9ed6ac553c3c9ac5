module closerace

go 1.19
