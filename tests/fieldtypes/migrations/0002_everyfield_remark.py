from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("fieldtypes", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="everyfield",
            name="remark",
            field=models.CharField(blank=True, max_length=20, null=True),
        ),
    ]
