/* transform: every record that has numeric "price" and "qty" gets "total" = price * qty. */
#include <stdlib.h>

#include "adf.h"

static json *transform(json *input) {
    json *records = json_take(input, "records");
    if (!records) records = json_array();
    int priced = 0;
    for (size_t i = 0; i < records->count; i++) {
        json *record = records->items[i];
        double price, qty;
        if (json_get_number(record, "price", &price) && json_get_number(record, "qty", &qty)) {
            json_set(record, "total", json_number(price * qty));
            priced++;
        }
    }
    adf_text msg = {0};
    adf_text_add(&msg, "transform: priced ");
    adf_text_number(&msg, priced);
    adf_text_add(&msg, " of ");
    adf_text_number(&msg, (double)records->count);
    adf_text_add(&msg, " records");
    adf_log(1, msg.data);
    free(msg.data);

    json *output = json_object();
    json_set(output, "records", records);
    return output;
}

ADF_EXPORT("run") int64_t run(int32_t ptr, int32_t len) { return adf_handle(ptr, len, transform); }
