from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("catalog", "0003_legacything_discount_and_more"),
        # the apps whose foreign keys point at Item must have created them first
        ("search", "0001_initial"),
        ("workflow", "0001_initial"),
    ]

    operations = [
        migrations.RenameModel(old_name="Item", new_name="Product"),
        migrations.RenameModel(old_name="ItemImage", new_name="ProductImage"),
        migrations.RenameField(model_name="productimage", old_name="item", new_name="product"),
        migrations.RenameField(model_name="product", old_name="title", new_name="name"),
    ]
